"""moto in server mode, as the integration tests and the benchmarks run it.

It runs moto's server application as `moto_server` does, with these differences:
- it binds port 0 of 127.0.0.1 and prints the port it got, so parallel servers never race for a
  port;
- DynamoDB requests are served one at a time. DynamoDB applies a conditional write to an item
  atomically; moto checks the condition and writes in separate steps, so two concurrent
  conditional writes (a `complete` racing a `fail`) could both succeed on it;
- a Query on a table's primary key gathers its candidates from the queried partition only. moto
  collects (and sorts) every item of the table for each page and then keeps those of the
  partition: the same candidates, but quadratic in the table size over a paginated read of all
  shards. Sorting, paging, size limits, conditions and filters stay moto's own;
- an `AttributeValue` in a JSON response is written as moto already holds it (DynamoDB JSON)
  instead of through moto's generic model serializer, which tries every member of the union for
  every value: about 9 ms per item returned, most of a Query's time. Values holding binary (`B`,
  `BS`) still take the generic path; the responses parse to the same items either way.

Run it with the Python of moto's virtualenv: `python tests/moto_launcher.py`. A program that
wants to wrap the application (the request-counting benchmark) imports it, calls `patch()`, and
serves its own wrapper of `application()` with `serve()`.
"""

import os
import threading

from moto.core.serialize import BaseJSONSerializer
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


def _plain(value):
    for kind, inner in value.items():
        if kind in ("B", "BS"):
            return False
        if kind == "L" and not all(isinstance(v, dict) and _plain(v) for v in inner):
            return False
        if kind == "M" and not all(isinstance(v, dict) and _plain(v) for v in inner.values()):
            return False
    return True


def patch():
    """Applies the serializer and the partition-only Query changes to moto (once per process)."""
    serialize_structure = BaseJSONSerializer._serialize_type_structure

    def serialize_attribute_value(self, serialized, value, shape, key):
        if shape.name == "AttributeValue" and isinstance(value, dict) and _plain(value):
            self._default_serialize(serialized, value, shape, key)
        else:
            serialize_structure(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = serialize_attribute_value

    queried = threading.local()
    table_query, table_all_items = Table.query, Table.all_items

    def query(self, hash_key, *args, **kwargs):
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        base = index_name is None and hash_key is not None and self.range_key_attr is not None
        queried.partition = (self, hash_key) if base else None
        try:
            return table_query(self, hash_key, *args, **kwargs)
        finally:
            queried.partition = None

    def all_items(self):
        partition = getattr(queried, "partition", None)
        if partition is not None and partition[0] is self:
            return list(self.items.get(partition[1], {}).values())
        return table_all_items(self)

    Table.query, Table.all_items = query, all_items


def application():
    """moto's application, with DynamoDB requests served one at a time."""
    backend = DomainDispatcherApplication(create_backend_app)
    dynamodb = threading.Lock()

    def app(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with dynamodb:
                return list(backend(environ, start_response))
        return backend(environ, start_response)

    return app


def serve(app):
    """Serves `app` on a free port of 127.0.0.1 and prints the port, then serves forever."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    # moto writes its own address into what it returns (queue URLs, for one).
    os.environ["MOTO_PORT"] = str(server.port)
    print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    patch()
    serve(application())
