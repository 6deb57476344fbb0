"""Package pushes, overwrites and deletes in the audit trail."""

from __future__ import annotations

import pytest

from http_helpers import shared_package_store, start_http_node, upload
from octonodes.errors import DatabaseError, NotFound
from test_events import refuse_events

pytestmark = pytest.mark.slow


def test_push_overwrite_and_delete_are_events_and_a_refused_event_stores_nothing(
        fast_cluster, start_node, tmp_path):
    shared_package_store(fast_cluster, tmp_path)
    _, key = fast_cluster.add_api_key("builds", "packages")
    node = start_http_node(start_node, "node-1")
    assert upload(node.url, key, "Acme.Web.1.0.0.zip", b"one").status_code == 200
    assert upload(node.url, key, "Acme.Web.1.0.0.zip", b"two").status_code == 409  # not a change
    again = upload(node.url, key, "Acme.Web.1.0.0.zip", b"two!", mode="OverwriteExisting")
    assert again.status_code == 200, again.text
    pushed = fast_cluster.events(actions=["package.push", "package.overwrite"])
    assert [(e.action.value, e.target, e.actor, e.details["size"]) for e in pushed] == [
        ("package.overwrite", "Acme.Web.1.0.0.zip", "key builds (127.0.0.1)", 4),
        ("package.push", "Acme.Web.1.0.0.zip", "key builds (127.0.0.1)", 3)]

    undo = refuse_events(fast_cluster)
    try:
        refused = upload(node.url, key, "Acme.Web.2.0.0.zip", b"never")
        assert refused.status_code == 503, refused.text
        assert [p.file_name for p in fast_cluster.packages()] == ["Acme.Web.1.0.0.zip"]
        with pytest.raises(DatabaseError):
            fast_cluster.delete_package("Acme.Web.1.0.0.zip", actor="ops@h")
        assert [p.file_name for p in fast_cluster.packages()] == ["Acme.Web.1.0.0.zip"]
    finally:
        undo()
    assert not list(fast_cluster.package_folder().path.glob(".incoming-*"))  # no partial file left

    gone = fast_cluster.delete_package("Acme.Web.1.0.0.zip", actor="ops@h", reason="bad build")
    assert gone.version == "1.0.0" and fast_cluster.packages() == []
    [deleted] = fast_cluster.events(actions=["package.delete"])
    assert (deleted.actor, deleted.reason, deleted.details["sha256"]) == \
        ("ops@h", "bad build", gone.sha256)
    with pytest.raises(NotFound):
        fast_cluster.delete_package("Acme.Web.1.0.0.zip")
