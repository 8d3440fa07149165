"""moto as tests/moto_launcher.py runs it, with requests authorized the way AWS authorizes them.

Start it with INITIAL_NO_AUTH_ACTION_COUNT=N: the first N requests are not checked, every later
one is signed with an IAM user's access key and allowed only by that user's policies. moto's own
checks differ from AWS where the service's grants depend on it, so this launcher corrects them:

- DynamoDB: moto checks every request against the resource "*", so a grant on one table's ARN
  allows nothing. Here each request is checked against the ARN of the table it names, and the
  requests that act on several items are checked the way DynamoDB checks them: a
  TransactWriteItems needs PutItem, UpdateItem, DeleteItem or ConditionCheckItem on the table of
  each of its items, a TransactGetItems GetItem on each, a BatchGetItem or BatchWriteItem that
  action on every table it names.
- SQS: the batch calls are authorized as their single forms (SendMessageBatch as SendMessage,
  DeleteMessageBatch as DeleteMessage, ChangeMessageVisibilityBatch as ChangeMessageVisibility).
- EventBridge: moto checks every request against the resource "*"; here a PutEvents is checked
  against the ARN of the event bus of each of its entries (the account's default bus when an entry
  names none), as EventBridge authorizes it. Other EventBridge requests stay checked against "*".
- S3: a presigned URL (no Authorization header, the key in X-Amz-Credential) failed with a 500;
  here it is authorized against the policies of the key that signed it, as S3 does. Its signature
  is not verified (moto verifies no presigned signature).

Every refused request is recorded; `GET /moto-iam/denials` answers them as JSON
(`[{"accessKeyId", "action", "resource"}]`), so a test can name the grant a call lacked.
"""

import json
import threading

import moto_launcher
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.dynamodb.responses import DynamoHandler
from moto.events.responses import EventsHandler
from moto.iam.access_control import IAMRequest, IAMRequestBase
from moto.sqs.responses import SQSResponse

DENIALS_PATH = "/moto-iam/denials"
# The signature written into the Authorization header made up for a presigned request.
PRESIGNED_SIGNATURE = "presigned-url"

# The IAM action of each kind of item of a transaction.
TRANSACTION_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}

SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}

denials = []
denials_lock = threading.Lock()


def _request_as(action):
    """An IAM request class that checks `action` instead of the request's own action."""

    class Request(IAMRequest):
        def __init__(self, **kwargs):
            kwargs["action"] = action
            super().__init__(**kwargs)

    return Request


def _enforcing():
    """Whether requests are checked yet; counts the request when not (as moto does)."""
    if ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT:
        return True
    ActionAuthenticatorMixin.request_count += 1
    return False


def _dynamodb_checks(handler):
    """The (action, resource ARN) pairs DynamoDB authorizes a request by."""
    action = handler._get_action()
    # moto has parsed the JSON body of a DynamoDB request already.
    body = handler.body if isinstance(handler.body, dict) else json.loads(handler.body or "{}")

    def table_arn(name, index=None):
        arn = name if name.startswith("arn:") else (
            f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{name}"
        )
        return f"{arn}/index/{index}" if index else arn

    if action in ("TransactWriteItems", "TransactGetItems"):
        for item in body.get("TransactItems", []):
            for kind, operation in item.items():
                yield TRANSACTION_ITEM_ACTIONS[kind], table_arn(operation["TableName"])
    elif action in ("BatchGetItem", "BatchWriteItem"):
        for table in body.get("RequestItems", {}):
            yield action, table_arn(table)
    elif "TableName" in body:
        yield action, table_arn(body["TableName"], body.get("IndexName"))
    else:
        yield action, "*"


def _authorize_dynamodb(self, resource="*"):
    if not _enforcing():
        return
    for action, arn in _dynamodb_checks(self):
        self._authenticate_and_authorize_action(_request_as(action), arn)


def _authorize_sqs(self, resource="*"):
    if not _enforcing():
        return
    action = self._get_action()
    self._authenticate_and_authorize_action(_request_as(SQS_BATCH_ACTIONS.get(action, action)), resource)


def _event_bus_arns(handler):
    """The ARNs of the event buses a PutEvents request publishes to, each once."""
    body = json.loads(handler.body or "{}") if isinstance(handler.body, (str, bytes)) else (handler.body or {})
    # No entries is checked as one entry for the default bus: no request goes unchecked.
    names = [entry.get("EventBusName") or "default" for entry in body.get("Entries", [])] or ["default"]
    arns = []
    for name in names:
        arn = name if name.startswith("arn:") else (
            f"arn:aws:events:{handler.region}:{handler.current_account}:event-bus/{name}"
        )
        if arn not in arns:
            arns.append(arn)
    return arns


def _authorize_events(self, resource="*"):
    if not _enforcing():
        return
    action = self._get_action()
    if action == "PutEvents":
        for arn in _event_bus_arns(self):
            self._authenticate_and_authorize_action(_request_as(action), arn)
    else:
        self._authenticate_and_authorize_action(_request_as(action), resource)


def patch():
    """The corrections above, and the record of refused requests."""
    DynamoHandler._authenticate_and_authorize_normal_action = _authorize_dynamodb
    EventsHandler._authenticate_and_authorize_normal_action = _authorize_events
    SQSResponse._authenticate_and_authorize_normal_action = _authorize_sqs
    authorize_s3 = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def authorize_s3_presigned(self, bucket_name=None, key_name=None):
        credential = self.querystring.get("X-Amz-Credential")
        if not credential or "Authorization" in self.headers:
            return authorize_s3(self, bucket_name=bucket_name, key_name=key_name)
        credential = credential[0] if isinstance(credential, list) else credential
        headers = dict(self.headers.items())
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature={PRESIGNED_SIGNATURE}"
        )
        original_headers, self.headers = self.headers, headers
        try:
            return authorize_s3(self, bucket_name=bucket_name, key_name=key_name)
        finally:
            self.headers = original_headers

    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = authorize_s3_presigned
    check_signature = IAMRequestBase.check_signature

    def check_signature_unless_presigned(self):
        if not self._headers["Authorization"].endswith(f"Signature={PRESIGNED_SIGNATURE}"):
            check_signature(self)

    IAMRequestBase.check_signature = check_signature_unless_presigned
    check = IAMRequestBase.check_action_permitted

    def check_and_record(self, resource):
        try:
            check(self, resource)
        except Exception:
            credential = self._get_string_between("Credential=", ",", self._headers["Authorization"])
            with denials_lock:
                denials.append({"accessKeyId": credential.split("/")[0], "action": self._action, "resource": resource})
            raise

    IAMRequestBase.check_action_permitted = check_and_record


def application():
    """The launcher's application, answering the record of refused requests at DENIALS_PATH."""
    inner = moto_launcher.application()

    def app(environ, start_response):
        if environ.get("PATH_INFO") == DENIALS_PATH:
            with denials_lock:
                body = json.dumps(denials).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return inner(environ, start_response)

    return app


if __name__ == "__main__":
    moto_launcher.patch()
    patch()
    moto_launcher.serve(application())
