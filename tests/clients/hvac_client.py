"""Drives the engine's HTTP API with hvac, unchanged, as a Vault client would.

Usage: hvac_client.py VAULT_ADDR ADMIN_TOKEN LITELLM_URL LITELLM_MASTER_KEY

Prints one JSON line with the number of checks on success. Exits with status 1 and the
failed check on stderr otherwise.
"""

import json
import sys

import hvac
from hvac import exceptions


class CheckFailed(Exception):
    pass


checks = 0


def check(condition, description):
    global checks
    checks += 1
    if not condition:
        raise CheckFailed(description)


def expect_error(error_type, call, description):
    try:
        call()
    except error_type:
        check(True, description)
        return
    raise CheckFailed(f"{description}: no {error_type.__name__} raised")


def configure(client, litellm_url, master_key):
    client.write("litellm/config", url=litellm_url, master_key=master_key)
    config = client.read("litellm/config")
    check(config["data"]["url"] == litellm_url, f"config url: {config}")
    check(config["data"]["master_key_set"] is True, "master_key_set")
    check(master_key not in json.dumps(config), "config read never returns the master key")


def write_roles(client):
    check(client.list("litellm/roles") is None, "empty role list reads as None")
    response = client.write("litellm/roles/dev", models=["gpt-4o-mini"], ttl="1h", max_ttl="2h")
    check(response["data"]["ttl"] == 3600, f"role write returns the role: {response}")
    client.write("litellm/roles/ops", models=["gpt-4o"], ttl=600)
    roles = client.list("litellm/roles")
    check(roles["data"]["keys"] == ["dev", "ops"], f"role list: {roles}")
    role = client.read("litellm/roles/dev")
    check(role["data"]["models"] == ["gpt-4o-mini"], f"role read: {role}")
    check(role["data"]["max_ttl"] == 7200, "max_ttl in seconds")


def leases(client):
    creds = client.read("litellm/creds/dev")
    lease_id = creds["lease_id"]
    check(lease_id.startswith("litellm/creds/dev/"), f"lease id: {lease_id}")
    check(creds["lease_duration"] == 3600 and creds["renewable"], f"lease: {creds}")
    check(creds["data"]["key"].startswith("sk-"), "a LiteLLM key")

    short = client.write("litellm/creds/dev", ttl="10m")
    check(short["lease_duration"] == 600, f"creds with ttl: {short}")

    renewed = client.sys.renew_lease(lease_id=lease_id, increment=900)
    check(renewed["lease_id"] == lease_id, f"renew: {renewed}")
    check(renewed["lease_duration"] == 900, f"renew duration: {renewed}")

    lease = client.sys.read_lease(lease_id=lease_id)
    check(lease["data"]["id"] == lease_id, f"lookup: {lease}")
    check(0 < lease["data"]["ttl"] <= 900, f"lookup ttl: {lease}")
    check(creds["data"]["key"] not in json.dumps(lease), "lookup never returns the key")

    listed = client.sys.list_leases(prefix="litellm/creds/dev/")
    check(len(listed["data"]["keys"]) == 2, f"lease list: {listed}")
    top = client.sys.list_leases(prefix="litellm/creds/")
    check(top["data"]["keys"] == ["dev/"], f"lease directories: {top}")

    client.sys.revoke_lease(lease_id=lease_id)
    expect_error(exceptions.InvalidPath, lambda: client.sys.read_lease(lease_id=lease_id), "revoked lease is gone")
    client.sys.revoke_lease(lease_id=short["lease_id"])


def client_token(client, addr):
    created = client.auth.token.create(policies=["dev"], ttl="1h")
    token = created["auth"]["client_token"]
    check(created["auth"]["policies"] == ["dev"], f"token create: {created}")

    app = hvac.Client(url=addr, token=token)
    check(app.is_authenticated(), "client token authenticates")
    creds = app.read("litellm/creds/dev")
    check(creds["data"]["key"].startswith("sk-"), "client token gets creds for its role")
    expect_error(exceptions.Forbidden, lambda: app.read("litellm/creds/ops"), "other role refused")
    expect_error(exceptions.Forbidden, lambda: app.read("litellm/config"), "config refused")
    expect_error(exceptions.Forbidden, lambda: app.write("litellm/roles/dev", models=[]), "role write refused")
    app.sys.renew_lease(lease_id=creds["lease_id"], increment=60)
    app.sys.revoke_lease(lease_id=creds["lease_id"])

    check(not hvac.Client(url=addr, token="wrong").is_authenticated(), "wrong token does not authenticate")
    expect_error(exceptions.Forbidden, lambda: hvac.Client(url=addr, token="wrong").read("litellm/config"), "wrong token refused")


def main():
    addr, admin_token, litellm_url, master_key = sys.argv[1:5]
    client = hvac.Client(url=addr, token=admin_token)
    check(client.sys.read_health_status(method="GET")["sealed"] is False, "health")
    configure(client, litellm_url, master_key)
    write_roles(client)
    leases(client)
    client_token(client, addr)
    client.delete("litellm/roles/ops")
    check(client.list("litellm/roles")["data"]["keys"] == ["dev"], "role delete")
    print(json.dumps({"ok": True, "checks": checks, "hvac": hvac.__version__ if hasattr(hvac, "__version__") else "unknown"}))


if __name__ == "__main__":
    try:
        main()
    except (CheckFailed, exceptions.VaultError) as error:
        print(f"hvac check failed after {checks} checks: {error!r}", file=sys.stderr)
        sys.exit(1)
