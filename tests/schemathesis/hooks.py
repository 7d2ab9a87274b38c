"""Credentials per route for the schemathesis run (tests/schemathesis.sh sets the ST_* variables).

Each route family gets the kind of caller it is for, so the fuzzer gets past authentication:
a citizen for /v1/me/ and the status of the citizen's own applications, a UWV werkcoach (who is
also an auditor) for the employee and audit routes, UWV's partner key for /v1/adapters, and the
operator's admin token for /admin/. Schemathesis removes them itself where it checks that a
route refuses requests without credentials (`ignored_auth`).
"""

import os

import schemathesis

CITIZEN = os.environ["ST_CITIZEN"]
EMPLOYEE = os.environ["ST_EMPLOYEE"]
PARTNER = os.environ["ST_PARTNER"]
ADMIN = os.environ["ST_ADMIN"]


def _bearer(case, token):
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.auth().apply_to(path_regex="^/v1/(me/|applications/)")
class Citizen:
    def get(self, case, ctx):
        return CITIZEN

    def set(self, case, data, ctx):
        _bearer(case, data)


@schemathesis.auth().apply_to(path_regex="^/v1/(dossiers|audit/|views$)")
class Employee:
    def get(self, case, ctx):
        return EMPLOYEE

    def set(self, case, data, ctx):
        _bearer(case, data)


@schemathesis.auth().apply_to(path_regex="^/v1/adapters")
class Partner:
    def get(self, case, ctx):
        return PARTNER

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["X-Api-Key"] = data


@schemathesis.auth().apply_to(path_regex="^/admin/")
class Admin:
    def get(self, case, ctx):
        return ADMIN

    def set(self, case, data, ctx):
        _bearer(case, data)
