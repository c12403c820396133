"""Where the client finds its API URL and token; the same lookup as the TypeScript SDK (sdk/config.ts)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

from .errors import FerryConfigError


def credentials_files(environ: Mapping[str, str], cwd: Path, home: Path) -> List[Path]:
    """Credentials files, in the order they are tried."""
    files = []
    if environ.get("FERRY_CREDENTIALS"):
        files.append(Path(environ["FERRY_CREDENTIALS"]))
    files.append(cwd / ".ferry" / "credentials.json")
    files.append(home / ".ferry" / "credentials.json")
    return files


def resolve_credentials(
    api_url: Optional[str] = None,
    token: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    home: Optional[Path] = None,
) -> Tuple[str, str]:
    """API URL and token: from arguments, else FERRY_API_URL / FERRY_TOKEN, else the first credentials file found.

    The file is JSON ``{"api_url": ..., "token": ..., "user_id": ...}``, as ``npm start`` writes it.
    """
    environ = os.environ if environ is None else environ
    api_url = api_url or environ.get("FERRY_API_URL") or None
    token = token or environ.get("FERRY_TOKEN") or None
    if not api_url or not token:
        for path in credentials_files(environ, cwd or Path.cwd(), home or Path.home()):
            if not path.is_file():
                continue
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise FerryConfigError(f"cannot read the Ferry credentials file {path}: {exc}") from exc
            api_url = api_url or saved.get("api_url")
            token = token or saved.get("token")
            break
    if not api_url or not token:
        raise FerryConfigError(
            "no Ferry credentials: pass api_url and token, set FERRY_API_URL and FERRY_TOKEN, "
            "or point FERRY_CREDENTIALS at a credentials file (`npm start` writes .ferry/credentials.json)"
        )
    return api_url.rstrip("/"), token
