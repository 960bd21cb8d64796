"""The demo tenant of the local stack: API keys, a JWT, a ScaiDrive share, curl examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scaidevstack.stack.components import PORTS

TENANT = "tnt_demo"
USER = "usr_demo"


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def create_api_key(module: str, env: dict[str, str]) -> str:
    """``python -m <module> apikeys create`` for the demo admin; returns the key."""
    out = _run(
        [
            sys.executable,
            "-m",
            module,
            "apikeys",
            "create",
            "--tenant",
            TENANT,
            "--user",
            USER,
            "--role",
            "tenant_admin",
            "--name",
            "make run demo",
        ],
        env,
    )
    return str(json.loads(out)["key"])


def mint_jwt(state_dir: Path, env: dict[str, str]) -> str:
    """A demo user JWT with the ScaiDrive scopes, minted by dev ScaiKey's CLI."""
    return _run(
        [
            sys.executable,
            "-m",
            "scaidevstack",
            "scaikey",
            "mint",
            "--state-dir",
            str(state_dir),
            "--tenant",
            TENANT,
            "--user",
            USER,
            "--role",
            "tenant_admin",
            "--scope",
            "files:read files:write",
            "--email",
            "demo@example.test",
            "--ttl",
            "86400",
        ],
        env,
    )


def ensure_share(state_dir: Path, env: dict[str, str]) -> None:
    """Create the ScaiDrive share ``Demo`` owned by the demo user once."""
    data_dir = str(state_dir / "scaidrive")
    listing = _run(
        [
            sys.executable,
            "-m",
            "scaidevstack",
            "scaidrive",
            "share",
            "list",
            "--data-dir",
            data_dir,
        ],
        env,
    )
    if '"Demo"' in listing:
        return
    _run(
        [
            sys.executable,
            "-m",
            "scaidevstack",
            "scaidrive",
            "share",
            "create",
            "--data-dir",
            data_dir,
            "--tenant",
            TENANT,
            "--name",
            "Demo",
            "--member",
            f"{USER}:owner",
        ],
        env,
    )


def write_credentials(
    path: Path, echo_key: str, speak_key: str, jwt: str, database_url: str
) -> None:
    """``.devstack/credentials.env``: base URLs, demo credentials, and the database URL the
    ``apikeys``/``budgets`` CLIs need."""
    path.write_text(
        "\n".join(
            [
                f"SCAIECHO_URL=http://127.0.0.1:{PORTS['scaiecho']}",
                f"SCAISPEAK_URL=http://127.0.0.1:{PORTS['scaispeak']}",
                f"SCAI_DEMO_API_KEY={echo_key}",
                f"SCAI_DEMO_SCAIECHO_API_KEY={echo_key}",
                f"SCAI_DEMO_SCAISPEAK_API_KEY={speak_key}",
                f"SCAI_DEMO_JWT={jwt}",
                f"SCAIECHO_DATABASE_URL={database_url}",
                f"SCAISPEAK_DATABASE_URL={database_url}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    path.chmod(0o600)


def instructions(credentials: Path) -> str:
    """The commands printed once the stack is up."""
    return f"""
The local stack is up. Load the demo credentials into your shell:

  set -a; . {credentials}; set +a

Readiness of both services (no token needed):
  curl -s $SCAIECHO_URL/readyz
  curl -s $SCAISPEAK_URL/readyz

The API documents itself (OpenAPI and a docs page):
  curl -s $SCAIECHO_URL/v1/modules/scaiecho/openapi.json | head -c 300; echo
  open $SCAIECHO_URL/v1/modules/scaiecho/docs

Authentication: an sgk_ API key and a ScaiKey JWT both work; no token is a 401 envelope:
  curl -s $SCAIECHO_URL/v1/modules/scaiecho/transcribe -X POST
  curl -s -H "Authorization: Bearer $SCAI_DEMO_SCAIECHO_API_KEY" \\
       $SCAIECHO_URL/v1/modules/scaiecho/nope
  curl -s -H "Authorization: Bearer $SCAI_DEMO_JWT" $SCAISPEAK_URL/v1/modules/scaispeak/nope

Transcribe a file with ScaiEcho (inline; `-F force_async=true` makes it a job), list your jobs,
and use the OpenAI-compatible route:
  curl -s http://127.0.0.1:8090/v1/audio/speech -H "Authorization: Bearer sk-devstack" \\
       -H "Content-Type: application/json" -o /tmp/hello.wav \\
       -d '{{"model":"tts-1","voice":"joe","input":"Hello, a test.","response_format":"wav"}}'
  curl -s $SCAIECHO_URL/v1/modules/scaiecho/transcribe \\
       -H "Authorization: Bearer $SCAI_DEMO_SCAIECHO_API_KEY" \\
       -F file=@/tmp/hello.wav -F language_hint=en
  curl -s $SCAIECHO_URL/v1/modules/scaiecho/transcribe/jobs \\
       -H "Authorization: Bearer $SCAI_DEMO_SCAIECHO_API_KEY"
  curl -s $SCAIECHO_URL/v1/modules/scaiecho/v1/audio/transcriptions \\
       -H "Authorization: Bearer $SCAI_DEMO_SCAIECHO_API_KEY" -F file=@/tmp/hello.wav \\
       -F model=whisper-1 -F response_format=srt

Design a voice with ScaiSpeak and speak with it (more in services/scaispeak/README.md):
  H="Authorization: Bearer $SCAI_DEMO_SCAISPEAK_API_KEY"; S=$SCAISPEAK_URL/v1/modules/scaispeak
  VOICE=$(curl -s $S/voices -H "$H" -H "Content-Type: application/json" \\
       -d '{{"voice_design_prompt":"A calm, warm narrator",'\\
'"display_name":"Narrator","language_primary":"en"}}' \\
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["voice_id"])')
  curl -s $S/speak -o /tmp/speak.mp3 -H "Accept: audio/mpeg" -H "$H" \\
       -H "Content-Type: application/json" \\
       -d "{{\\"text\\":\\"Hello from ScaiSpeak.\\",\\"voice_id\\":\\"$VOICE\\"}}"

The inference node (backend A over gRPC) also speaks the OpenAI audio API (backend B):
  curl -s http://127.0.0.1:8090/v1/audio/speech -H "Authorization: Bearer sk-devstack" \\
       -H "Content-Type: application/json" -o /tmp/hello.wav \\
       -d '{{"model":"tts-1","voice":"joe","input":"Hello there.","response_format":"wav"}}'
  curl -s http://127.0.0.1:8090/v1/audio/transcriptions -H "Authorization: Bearer sk-devstack" \\
       -F file=@/tmp/hello.wav -F model=whisper-1

Metrics:
  curl -s $SCAIECHO_URL/metrics | grep scaiecho_http_requests_total

API keys and budgets (per service):
  uv run python -m scaiecho apikeys list --tenant tnt_demo
  uv run python -m scaiecho budgets set --tenant tnt_demo --period month \\
       --unit audio_ms --amount 3600000

Logs are in .devstack/logs/. Press Ctrl-C to stop (or `make stop` after DETACH=1).
"""
