"""The HTTP layer against a tiny in-process server: retries reuse the Idempotency-Key; errors are typed."""

import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ferry_compute._http import Http, transfer
from ferry_compute.errors import FerryApiError, FerryError


class Script(BaseHTTPRequestHandler):
    """Answers from `server.answers` in order: (status, body dict); records every request."""

    def do_POST(self):  # noqa: N802
        self.answer()

    def do_GET(self):  # noqa: N802
        self.answer()

    def do_PUT(self):  # noqa: N802
        self.answer()

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        status, reply = self.server.answers.pop(0)
        data = json.dumps(reply).encode() if not isinstance(reply, bytes) else reply
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class HttpTests(unittest.TestCase):
    def setUp(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Script)
        self.server.seen, self.server.answers = [], []
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.sleeps = []
        self.http = Http(self.url, "tok", sleep=self.sleeps.append)

    def test_a_retried_submit_sends_the_same_idempotency_key(self):
        self.server.answers = [(503, {"error": {"code": "ServiceUnavailable", "message": "busy"}}), (429, {"error": {"code": "Throttled", "message": "slow down"}}), (202, {"task_ids": ["a"]})]
        out = self.http.request("POST", "/v1/endpoints/e/submit", {"tasks": []}, idempotency_key="k-1")
        self.assertEqual(out, {"task_ids": ["a"]})
        self.assertEqual([r["headers"].get("Idempotency-Key") for r in self.server.seen], ["k-1"] * 3)
        self.assertEqual({r["headers"]["Authorization"] for r in self.server.seen}, {"Bearer tok"})
        self.assertEqual({r["body"] for r in self.server.seen}, {b'{"tasks":[]}'})
        self.assertEqual(len(self.sleeps), 2)

    def test_errors_are_typed_and_bad_input_is_not_retried(self):
        self.server.answers = [(400, {"error": {"code": "ValidationFailed", "message": "tasks: too big"}})]
        with self.assertRaises(FerryApiError) as caught:
            self.http.request("POST", "/v1/endpoints/e/submit", {"tasks": []})
        self.assertEqual((caught.exception.status, caught.exception.code, caught.exception.message), (400, "ValidationFailed", "tasks: too big"))
        self.assertEqual(len(self.server.seen), 1)

    def test_a_partial_submit_failure_is_not_retried_and_keeps_its_details(self):
        error = {"error": {"code": "PartialSubmitFailure", "message": "1 of 2", "task_ids": ["a", "b"], "not_queued": ["b"]}}
        self.server.answers = [(503, error)]
        with self.assertRaises(FerryApiError) as caught:
            self.http.request("POST", "/v1/endpoints/e/submit", {"tasks": []}, idempotency_key="k")
        self.assertEqual(caught.exception.details["not_queued"], ["b"])
        self.assertEqual(len(self.server.seen), 1)

    def test_giving_up_after_max_attempts(self):
        self.server.answers = [(500, b"oops")] * 5
        with self.assertRaises(FerryApiError) as caught:
            self.http.request("GET", "/v1/endpoints")
        self.assertEqual((caught.exception.status, caught.exception.code), (500, "HttpError"))
        self.assertEqual(len(self.server.seen), 5)

    def test_an_unreachable_api_is_named(self):
        http = Http("http://127.0.0.1:9", "tok", max_attempts=2, sleep=lambda s: None)
        with self.assertRaises(FerryError) as caught:
            http.request("GET", "/v1/endpoints")
        self.assertIn("cannot reach the Ferry API at http://127.0.0.1:9", str(caught.exception))

    def test_presigned_transfers_send_no_token(self):
        self.server.answers = [(200, b""), (200, b"bytes!")]
        transfer("PUT", self.url + "/bucket/key?X-Amz-Signature=s", b"data")
        self.assertEqual(transfer("GET", self.url + "/bucket/key?X-Amz-Signature=s"), b"bytes!")
        put, get = self.server.seen
        self.assertEqual(put["body"], b"data")
        self.assertNotIn("Authorization", put["headers"])
        self.assertNotIn("Authorization", get["headers"])


if __name__ == "__main__":
    unittest.main()
