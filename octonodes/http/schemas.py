"""The JSON shapes of the REST API, as OpenAPI 3.0 schemas (for
`/api/openapi.json`, and for the suite that checks every answer against them)."""

from __future__ import annotations


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_of(name: str) -> dict:
    return {"application/json": {"schema": ref(name)}}


def _s(nullable: bool = False, **extra) -> dict:
    return {"type": "string", **({"nullable": True} if nullable else {}), **extra}


def _obj(required: dict, optional: dict | None = None, *, closed: bool = False) -> dict:
    schema = {"type": "object", "properties": {**required, **(optional or {})},
              "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _collection(item: str) -> dict:
    return _obj({"ItemType": _s(), "TotalResults": INT, "ItemsPerPage": INT,
                 "NumberOfPages": INT, "LastPageNumber": INT,
                 "Items": {"type": "array", "items": ref(item)}, "Links": LINKS})


INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = _s(nullable=True, format="date-time")
LINKS = {"type": "object", "additionalProperties": {"type": "string"}}
NODE_STATUS = {"type": "string", "enum": ["Running", "Draining", "Drained", "Offline"]}
TASK_STATE = {"type": "string", "enum": ["Queued", "Executing", "Cancelling", "Success", "Failed",
                                         "Canceled", "TimedOut"]}
SECONDS = {"type": "number", "nullable": True}

NODE = {
    "Id": _s(), "Name": _s(), "IsInMaintenanceMode": BOOL, "IsOffline": BOOL, "LastSeen": TIME,
    "MaxConcurrentTasks": INT, "RunningTaskCount": INT, "Version": _s(True), "Status": NODE_STATUS,
    "OfflineReason": {"type": "string", "enum": ["stopped", "lost"], "nullable": True},
    "OfflineSince": TIME, "DrainReason": _s(True), "DrainedBy": _s(True), "DrainedAt": TIME,
    "Host": _s(True), "HttpAddress": _s(True), "StartedAt": TIME, "Links": LINKS,
}
TASK = {
    "Id": _s(pattern=r"^ServerTasks-\d+$"), "SpaceId": _s(), "Name": _s(), "Description": _s(),
    "State": TASK_STATE, "IsCompleted": BOOL, "FinishedSuccessfully": BOOL,
    "HasWarningsOrErrors": BOOL, "ErrorMessage": _s(True), "QueueTime": TIME,
    "StartTime": TIME, "CompletedTime": TIME, "Duration": _s(True), "ServerNode": _s(True),
    "HasBeenPickedUpByProcessor": BOOL, "HasPendingInterruptions": BOOL, "CanRerun": BOOL,
    "Arguments": _obj({"Command": {"type": "array", "items": _s()}, "Timeout": SECONDS,
                       "QueueTimeout": SECONDS, "Retries": INT}),
    "ExitCode": {"type": "integer", "nullable": True}, "Attempt": INT, "Links": LINKS,
}
DURATION_IN = {"oneOf": [{"type": "number"}, {"type": "string"}], "nullable": True}

SCHEMAS: dict[str, dict] = {
    "Error": _obj({"ErrorMessage": _s(), "Errors": {"type": "array", "items": _s()}}),
    "Root": _obj({"Application": _s(), "Version": _s(), "ApiVersion": _s(),
                  "InstallationId": _s(), "Links": LINKS}),
    "Space": _obj({"Id": _s(), "Name": _s(), "Slug": _s(), "Description": _s(),
                   "IsDefault": BOOL, "TaskQueueStopped": BOOL, "Links": LINKS},
                  {"SpaceManagersTeams": {"type": "array"},
                   "SpaceManagersTeamMembers": {"type": "array"}}),
    "SpaceHome": _obj({"Links": LINKS}),
    "SpaceCollection": _collection("Space"),
    "NodePing": _obj({"Name": _s(), "IsOffline": BOOL},
                     {k: NODE[k] for k in ("Id", "IsInMaintenanceMode", "LastSeen",
                                           "MaxConcurrentTasks", "RunningTaskCount", "Version")}
                     | {"Status": _s()}),
    "Node": _obj(NODE),
    "NodeCollection": _collection("Node"),
    "NodeUpdate": _obj({}, {**NODE, "MaxConcurrentTasks": {"type": "integer", "minimum": 0,
                                                           "maximum": 1000}}, closed=True),
    "NodeDetails": _obj({"Node": ref("Node"), "RunningTasks": {"type": "array", "items": ref("Task")},
                         "Links": LINKS}),
    "ClusterSummary": _obj({
        "Nodes": {"type": "array", "items": _obj({k: NODE[k] for k in (
            "Id", "Name", "Status", "IsOffline", "IsInMaintenanceMode", "MaxConcurrentTasks",
            "RunningTaskCount", "LastSeen", "Links")})},
        "QueuedTaskCount": INT, "OldestQueuedTaskTime": TIME, "Links": LINKS}),
    "Task": _obj(TASK),
    "TaskCollection": _collection("Task"),
    "TaskDetails": _obj({
        "Task": ref("Task"), "Progress": {"type": "object"}, "PhysicalLogSize": INT,
        "ActivityLogs": {"type": "array", "items": {"type": "object"}}, "Log": _s(),
        "Links": LINKS}),
    "NewTask": _obj(
        {"Arguments": _obj({"Command": {"type": "array", "items": _s(minLength=1), "minItems": 1}},
                           closed=True)},
        {"Name": _s(True), "Description": _s(True), "Timeout": DURATION_IN,
         "QueueTimeout": DURATION_IN,
         "Retries": {"type": "integer", "minimum": 0, "maximum": 1000, "nullable": True},
         "SpaceId": _s(True)}, closed=True),
    "Package": _obj({"Id": _s(), "SpaceId": _s(), "PackageId": _s(), "Version": _s(),
                     "FileName": _s(), "FileExtension": _s(), "Size": INT,
                     "PackageSizeBytes": INT, "Sha256": _s(), "Hash": _s(), "Published": TIME,
                     "FeedId": _s(), "Links": LINKS}),
    "PackageCollection": _collection("Package"),
    "Event": _obj({"Id": _s(pattern=r"^Events-\d+$"), "Category": _s(), "Message": _s(),
                   "Occurred": TIME, "Username": _s(),
                   "RelatedDocumentIds": {"type": "array", "items": _s()},
                   "Comments": _s(True), "Links": LINKS},
                  {"Details": {"type": "object", "nullable": True}, "SpaceId": _s()}),
    "EventCollection": _collection("Event"),
}
