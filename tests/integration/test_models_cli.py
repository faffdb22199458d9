"""scripts/models.py against a real PostgreSQL and real model folders: every command, and every
refusal with its exit code and message (nothing changed on a refusal)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from second_model import model_dir_with_a_second_model

from lookalike.settings import get_settings
from lookalike.store import ModelRegistry, Store
from lookalike_aws.runtime import reset_runtime
from lookalike_local.lambda_runtime import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
SECOND = "projected-test/fp32/squash"


@pytest.fixture(scope="module")
def cli() -> ModuleType:
    return load_module(REPO_ROOT / "scripts" / "models.py", "models_cli")


@pytest.fixture
def folders(
    clean_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Path]]:
    model_dir, second = model_dir_with_a_second_model(get_settings().model_dir, tmp_path / "models")
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("DATABASE_URL", clean_database)
    reset_runtime()
    yield model_dir, second
    reset_runtime()


def run(cli: ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def altered_copy(folder: Path, to: Path, **changes: object) -> Path:
    """A copy of a model folder whose card has `changes` applied (dotted keys)."""
    copied = shutil.copytree(folder, to)
    card = json.loads((copied / "model_card.json").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = card
        for name in parents:
            target = target[name]
        target[last] = value
    (copied / "model_card.json").write_text(json.dumps(card))
    return copied


def test_the_lifecycle_and_its_refusals(
    cli: ModuleType,
    folders: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    clean_database: str,
    tmp_path: Path,
) -> None:
    model_dir, second = folders
    assert run(cli, capsys, "list")[:2] == (0, "no model registered yet\n")
    code, out, _ = run(cli, capsys, "add", str(model_dir))
    base = out.split()[1]
    assert (code, base) == (0, "efficientnet-lite0-imagenet-2026.11/int8/squash")
    assert run(cli, capsys, "activate", base)[0] == 0  # nothing was active: no metrics to compare
    code, out, _ = run(cli, capsys, "add", str(second))
    assert (code, SECOND in out) == (0, True)

    store = Store(clean_database)
    before = ModelRegistry(store).models()
    # Refusals: exit 1, a message that says why, nothing changed.
    assert run(cli, capsys, "add", str(second))[::2] == (
        1,
        f"refused: model version {SECOND!r} is already registered\n",
    )
    mismatched = altered_copy(second, tmp_path / "mismatched", variants__fp32__sha256="0" * 64)
    code, _, err = run(cli, capsys, "add", str(mismatched))
    assert (code, "does not match the model card" in err) == (1, True)
    huge = altered_copy(
        second, tmp_path / "huge", model_version="huge", outputs__embedding__shape=["N", 5000]
    )
    code, _, err = run(cli, capsys, "add", str(huge))
    assert (code, "dimension 5000 cannot be indexed" in err) == (1, True)
    assert run(cli, capsys, "activate", "unknown/fp32/squash")[::2] == (
        1,
        f"refused: unknown model version 'unknown/fp32/squash' (registered: {base}, {SECOND})\n",
    )
    assert "no held-out metrics" in run(cli, capsys, "activate", SECOND)[2]
    assert "is the active model" in run(cli, capsys, "retire", base)[2]
    assert "no standby model" in run(cli, capsys, "rollback")[2]
    assert ModelRegistry(store).models() == before

    code, out, _ = run(cli, capsys, "activate", SECOND, "--force")
    assert (code, out.splitlines()[:2]) == (
        0,
        [f"active: {SECOND}", f"standby: {base} (kept up to date for `rollback`)"],
    )
    listed = json.loads(run(cli, capsys, "list", "--json")[1])
    assert [(model["version"], model["state"], model["coverage"]) for model in listed] == [
        (base, "standby", 1.0),
        (SECOND, "active", 1.0),
    ]
    assert run(cli, capsys, "rollback")[1].startswith(f"active: {base}\n")
    assert run(cli, capsys, "retire", SECOND)[:2] == (
        0,
        f"retired {SECOND}: its vectors and index are dropped\n",
    )
    assert "retired" in run(cli, capsys, "list")[1]
    store.close()
