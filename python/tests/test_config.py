import json
import tempfile
import unittest
from pathlib import Path

from ferry_compute._config import resolve_credentials
from ferry_compute.errors import FerryConfigError


class ResolveCredentialsTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        self.cwd, self.home, self.other = root / "cwd", root / "home", root / "other"
        for d in (self.cwd, self.home, self.other):
            (d / ".ferry").mkdir(parents=True)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, base, api_url, token):
        path = base / ".ferry" / "credentials.json"
        path.write_text(json.dumps({"api_url": api_url, "token": token, "user_id": "local"}))
        return path

    def resolve(self, env, **given):
        return resolve_credentials(environ=env, cwd=self.cwd, home=self.home, **given)

    def test_arguments_win(self):
        self.write(self.cwd, "http://file", "file-token")
        env = {"FERRY_API_URL": "http://env", "FERRY_TOKEN": "env-token"}
        self.assertEqual(self.resolve(env, api_url="http://arg/", token="arg-token"), ("http://arg", "arg-token"))

    def test_environment_before_files(self):
        self.write(self.cwd, "http://file", "file-token")
        self.assertEqual(self.resolve({"FERRY_API_URL": "http://env", "FERRY_TOKEN": "env-token"}), ("http://env", "env-token"))

    def test_ferry_credentials_file_before_cwd_and_home(self):
        explicit = self.write(self.other, "http://explicit", "explicit-token")
        self.write(self.cwd, "http://cwd", "cwd-token")
        self.write(self.home, "http://home", "home-token")
        self.assertEqual(self.resolve({"FERRY_CREDENTIALS": str(explicit)}), ("http://explicit", "explicit-token"))

    def test_cwd_before_home(self):
        self.write(self.cwd, "http://cwd", "cwd-token")
        self.write(self.home, "http://home", "home-token")
        self.assertEqual(self.resolve({}), ("http://cwd", "cwd-token"))

    def test_home_last(self):
        self.write(self.home, "http://home", "home-token")
        self.assertEqual(self.resolve({"FERRY_CREDENTIALS": str(self.other / "missing.json")}), ("http://home", "home-token"))

    def test_a_half_given_pair_is_completed_from_the_first_file(self):
        self.write(self.cwd, "http://cwd", "cwd-token")
        self.assertEqual(self.resolve({"FERRY_TOKEN": "env-token"}), ("http://cwd", "env-token"))

    def test_nothing_found_is_a_clear_error(self):
        with self.assertRaises(FerryConfigError) as caught:
            self.resolve({})
        self.assertIn("FERRY_API_URL", str(caught.exception))

    def test_a_broken_file_is_named(self):
        (self.cwd / ".ferry" / "credentials.json").write_text("{not json")
        with self.assertRaises(FerryConfigError) as caught:
            self.resolve({})
        self.assertIn("credentials.json", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
