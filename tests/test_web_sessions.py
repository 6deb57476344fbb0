"""The web page's sessions: signed, kept in the shared database, ended by
sign-out, idleness or the key's revocation (on both backends, with the
store's clock moved by the test)."""

from __future__ import annotations

from octonodes.sessions import IDLE_LIMIT, TOUCH_AFTER


def test_a_session_proves_its_key_until_signed_out(clocked):
    cluster, _ = clocked
    _, key = cluster.add_api_key("alice")
    sessions = cluster.sessions()
    cookie = sessions.start(cluster.verify_api_key(key))
    session = sessions.check(cookie)
    assert session.key.name == "alice"
    assert key not in cookie  # the cookie never carries the key
    assert session.csrf_ok(session.csrf_token)
    assert not session.csrf_ok("") and not session.csrf_ok(None)
    assert not session.csrf_ok(session.csrf_token[:-1] + "x")
    assert sessions.end(cookie) is True
    assert sessions.check(cookie) is None
    assert sessions.end(cookie) is False


def test_any_node_checks_a_session_another_started(clocked, db):
    import octonodes

    cluster, clock = clocked
    _, key = cluster.add_api_key("alice")
    cookie = cluster.sessions().start(cluster.verify_api_key(key))
    with octonodes.open(db, clock=clock) as other:  # another node: its own connection
        assert other.sessions().check(cookie).key.name == "alice"
        assert other.sessions().end(cookie)
    assert cluster.sessions().check(cookie) is None


def test_forged_and_mangled_cookies_are_refused(clocked):
    cluster, _ = clocked
    _, key = cluster.add_api_key("alice")
    sessions = cluster.sessions()
    cookie = sessions.start(cluster.verify_api_key(key))
    token, _, mac = cookie.partition(".")
    for forged in ("", ".", token, f"{token}.", f"{token}.{mac[:-2]}AA", f"x{token}.{mac}",
                   "a" * 5000, "\x00." + mac, cookie + ".", f"{token}.\u00e9\u00e9",
                   f"{token}.\ud800", f"\u00e9.{mac}"):
        assert sessions.check(forged) is None, forged
        assert sessions.end(forged) is False, forged
    session = sessions.check(cookie)
    for sent in ("\u00e9" * 8, "\ud800", session.csrf_token + "\u00e9"):
        assert not session.csrf_ok(sent), sent


def test_a_session_ends_after_eight_idle_hours(clocked):
    cluster, clock = clocked
    _, key = cluster.add_api_key("alice")
    sessions = cluster.sessions()
    cookie = sessions.start(cluster.verify_api_key(key))
    clock.advance(IDLE_LIMIT - 10)
    assert sessions.check(cookie, used=False)  # a page refreshing itself is not use
    clock.advance(20)
    assert sessions.check(cookie) is None
    cookie = sessions.start(cluster.verify_api_key(key))
    for _ in range(3):  # used now and then, it lives on
        clock.advance(IDLE_LIMIT - TOUCH_AFTER - 10)
        assert sessions.check(cookie)


def test_revoking_the_key_ends_its_sessions(clocked):
    cluster, _ = clocked
    _, key = cluster.add_api_key("alice")
    cookie = cluster.sessions().start(cluster.verify_api_key(key))
    cluster.revoke_api_key("alice")
    assert cluster.sessions().check(cookie) is None


def test_the_signing_secret_is_made_once_for_the_cluster(clocked, db):
    import octonodes

    cluster, clock = clocked
    first = cluster.sessions().secret
    with octonodes.open(db, clock=clock) as other:
        assert other.sessions().secret == first
    assert len(first) >= 64
