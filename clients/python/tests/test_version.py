"""The SDK's version is the API's: docs/openapi.json's ``info.version``."""

import importlib.metadata
import json
import os
import unittest

import claudecluster

OPENAPI = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "docs", "openapi.json"
)


class VersionTest(unittest.TestCase):
    def test_the_version_is_the_openapi_documents(self) -> None:
        with open(OPENAPI, encoding="utf-8") as f:
            api_version = json.load(f)["info"]["version"]
        self.assertEqual(claudecluster.__version__, api_version)
        # What pip recorded when it installed the package (pyproject.toml
        # reads the version from the package).
        self.assertEqual(importlib.metadata.version("claudecluster"), api_version)

    def test_the_package_is_typed(self) -> None:
        marker = os.path.join(os.path.dirname(claudecluster.__file__), "py.typed")
        self.assertTrue(os.path.exists(marker), marker)


if __name__ == "__main__":
    unittest.main()
