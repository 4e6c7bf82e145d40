"""The model store: atomic publishing, checksums, the readers' cache (training/core/store.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from training.core.loading import ModelLoadError, load_model
from training.core.store import (
    MANIFEST,
    ModelStore,
    StoreError,
    key_of,
    set_store_factory,
    spec_of,
)
from training.core.tiny import tiny_llama, word_tokenizer
from training.core.versions import write_version


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = word_tokenizer(["a", "b", "c"])
    model = tiny_llama(tokenizer)
    return write_version(
        tmp_path_factory.mktemp("written") / "v1", model, tokenizer, metrics={"loss": 0.5}
    )


@pytest.fixture
def memory_url() -> Any:
    url = f"memory://store-{uuid.uuid4().hex[:8]}"
    yield url
    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory://")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _manifest_files(directory: Path) -> dict[str, Any]:
    files: dict[str, Any] = json.loads((directory / MANIFEST).read_text())["files"]
    return files


def test_a_published_version_is_fetched_into_the_readers_cache(
    version_dir: Path, memory_url: str, tmp_path: Path
) -> None:
    spec = ModelStore(memory_url, tmp_path / "writer").publish(version_dir, "proj/v1")
    assert spec == "store:proj/v1" and key_of(spec) == "proj/v1"

    reader = ModelStore(memory_url, tmp_path / "reader")
    local = reader.fetch("proj/v1")
    assert local == tmp_path / "reader" / "proj" / "v1"
    for name in [*_manifest_files(version_dir), MANIFEST]:
        assert (local / name).read_bytes() == (version_dir / name).read_bytes()


def test_publishing_writes_temporary_names_and_the_manifest_last(
    version_dir: Path, memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(memory_url, tmp_path / "cache")
    fs = store._filesystem()
    moves: list[tuple[str, str]] = []
    real_mv = fs.mv

    def recording_mv(src: str, dst: str, **kwargs: Any) -> Any:
        moves.append((src, dst))
        return real_mv(src, dst, **kwargs)

    monkeypatch.setattr(fs, "mv", recording_mv)
    store.publish(version_dir, "proj/v1")
    assert moves, "every file goes up under a temporary name"
    assert all(".tmp-" in src and ".tmp-" not in dst for src, dst in moves)
    assert moves[-1][1].endswith(f"proj/v1/{MANIFEST}")
    assert len(moves) == len(_manifest_files(version_dir)) + 1


def test_a_version_without_its_manifest_is_not_there(
    version_dir: Path, memory_url: str, tmp_path: Path
) -> None:
    store = ModelStore(memory_url, tmp_path / "cache")
    store.publish(version_dir, "proj/v1")
    fs = store._filesystem()
    fs.rm_file(store._remote("proj/v1", MANIFEST))
    assert not store.exists("proj/v1")
    with pytest.raises(StoreError, match="no version proj/v1"):
        ModelStore(memory_url, tmp_path / "reader").fetch("proj/v1")


def test_a_corrupt_file_is_refused_and_fetched_again(
    version_dir: Path, memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(memory_url, tmp_path / "writer")
    store.publish(version_dir, "proj/v1")
    reader = ModelStore(memory_url, tmp_path / "reader")
    fs = reader._filesystem()
    real_get = fs.get_file
    corrupt_left = [1]

    def flaky_get(remote: str, local: str, **kwargs: Any) -> Any:
        real_get(remote, local, **kwargs)
        if remote.endswith("model.safetensors") and corrupt_left[0]:
            corrupt_left[0] -= 1
            with open(local, "r+b") as fh:
                fh.seek(-1, 2)
                last = fh.read(1)
                fh.seek(-1, 2)
                fh.write(bytes([last[0] ^ 0xFF]))

    monkeypatch.setattr(fs, "get_file", flaky_get)
    local = reader.fetch("proj/v1")
    assert corrupt_left == [0]
    assert (local / "model.safetensors").read_bytes() == (
        version_dir / "model.safetensors"
    ).read_bytes()


def test_a_file_corrupt_in_the_store_is_refused_with_a_clear_error(
    version_dir: Path, memory_url: str, tmp_path: Path
) -> None:
    store = ModelStore(memory_url, tmp_path / "writer")
    store.publish(version_dir, "proj/v1")
    fs = store._filesystem()
    fs.pipe_file(store._remote("proj/v1", "model.safetensors"), b"not the weights")
    reader = ModelStore(memory_url, tmp_path / "reader")
    with pytest.raises(StoreError, match=r"proj/v1: model.safetensors does not match its checksum"):
        reader.fetch("proj/v1")
    assert not (tmp_path / "reader" / "proj" / "v1").exists()
    assert not list((tmp_path / "reader" / "proj").glob(".v1.tmp-*"))


def test_a_cached_version_is_reused_without_a_download(
    version_dir: Path, memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ModelStore(memory_url, tmp_path / "writer").publish(version_dir, "proj/v1")
    reader = ModelStore(memory_url, tmp_path / "reader")
    first = reader.fetch("proj/v1")
    fs = reader._filesystem()

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("downloaded a cached version again")

    monkeypatch.setattr(fs, "get_file", no_download)
    assert reader.fetch("proj/v1") == first
    # A cached copy missing a file is fetched again.
    monkeypatch.undo()
    (first / "model.safetensors").unlink()
    assert (reader.fetch("proj/v1") / "model.safetensors").is_file()


def test_a_directory_store_and_a_file_url_hold_the_same_layout(
    version_dir: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    ModelStore(shared, tmp_path / "writer").publish(version_dir, "proj/v1")
    assert (shared / "proj" / "v1" / MANIFEST).is_file()
    assert not list(shared.rglob("*.tmp-*"))
    local = ModelStore(f"file://{shared}", tmp_path / "reader").fetch("proj/v1")
    assert (local / MANIFEST).read_bytes() == (version_dir / MANIFEST).read_bytes()


def test_the_default_store_is_the_cache_itself(version_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    store = ModelStore(cache, cache)
    assert store.is_cache
    with pytest.raises(StoreError, match="no version proj/v1"):
        store.fetch("proj/v1")
    (cache / "proj").mkdir(parents=True)
    version_dir.rename(cache / "proj" / "v1")
    try:
        assert store.publish(cache / "proj" / "v1", "proj/v1") == "store:proj/v1"
        assert store.fetch("proj/v1") == cache / "proj" / "v1"
    finally:
        (cache / "proj" / "v1").rename(version_dir)


def test_a_different_version_under_a_published_key_is_refused(
    version_dir: Path, memory_url: str, tmp_path: Path
) -> None:
    store = ModelStore(memory_url, tmp_path / "cache")
    store.publish(version_dir, "proj/v1")
    assert store.publish(version_dir, "proj/v1") == "store:proj/v1"  # the same one: kept
    other = tmp_path / "other"
    other.mkdir()
    for name in [*_manifest_files(version_dir), MANIFEST]:
        (other / name).parent.mkdir(parents=True, exist_ok=True)
        (other / name).write_bytes((version_dir / name).read_bytes())
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["created_at"] = "another time"
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="already holds a different version proj/v1"):
        store.publish(other, "proj/v1")


@pytest.mark.parametrize("key", ["../etc/v1", "proj", "proj/v1/x", "/abs/v1", "proj/../v1"])
def test_keys_are_only_project_and_version(key: str) -> None:
    with pytest.raises(StoreError, match="not a model store key"):
        spec_of(key)
    with pytest.raises(StoreError):
        key_of("store:" + key)


def test_load_model_reads_a_store_spec_through_the_configured_store(
    version_dir: Path, memory_url: str, tmp_path: Path
) -> None:
    ModelStore(memory_url, tmp_path / "writer").publish(version_dir, "proj/v1")
    set_store_factory(lambda: ModelStore(memory_url, tmp_path / "reader"))
    try:
        model, tokenizer = load_model("store:proj/v1", device="cpu")
        assert (tmp_path / "reader" / "proj" / "v1" / MANIFEST).is_file()
        with pytest.raises(ModelLoadError, match="no version proj/v2"):
            load_model("store:proj/v2", device="cpu")
    finally:
        from training.store import configure

        configure()


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_version_paths_into_store_keys_and_back(settings: Any) -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    leaves = executor.loader.graph.leaf_nodes()
    annotate_leaf = [node for node in leaves if node[0] == "annotate"]
    before = [("training", "0006_gate_mode_from_gate"), *annotate_leaf]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    project = old.get_model("annotate", "Project").objects.create(
        name="Old", slug="old", export_salt="s"
    )
    version_model = old.get_model("training", "ModelVersion")
    old_models = Path("/srv/prefloop/var/models")
    specs = {
        0: "demo",
        1: str(old_models / "old" / "v1"),
        2: "/data/elsewhere/v2",  # a path that is not the project's version directory
        3: str(old_models / "old" / "v3"),
    }
    for number, spec in specs.items():
        version_model.objects.create(project_id=project.pk, number=number, spec=spec)

    executor.loader.build_graph()
    after = [("training", "0007_store_key"), *annotate_leaf]
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    rows = new.get_model("training", "ModelVersion").objects.filter(project_id=project.pk)
    assert dict(rows.values_list("number", "spec")) == {
        0: "demo",
        1: "store:old/v1",
        2: "/data/elsewhere/v2",
        3: "store:old/v3",
    }

    executor.loader.build_graph()
    executor.migrate(before)
    rows = version_model.objects.filter(project_id=project.pk)
    var_models = Path(settings.VAR_DIR) / "models"
    assert dict(rows.values_list("number", "spec")) == {
        0: "demo",
        1: str(var_models / "old" / "v1"),
        2: "/data/elsewhere/v2",
        3: str(var_models / "old" / "v3"),
    }
    executor.loader.build_graph()
    executor.migrate(leaves)


def test_a_lora_version_over_a_stored_version_loads_its_base_from_the_store(
    version_dir: Path, memory_url: str, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    writer = ModelStore(memory_url, tmp_path / "writer")
    writer.publish(version_dir, "proj/v1")
    set_store_factory(lambda: writer)
    try:
        base, tokenizer = load_model("store:proj/v1", device="cpu")
        lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        v2 = write_version(tmp_path / "v2", lora, tokenizer, base_model="store:proj/v1")
        writer.publish(v2, "proj/v2")

        reader = ModelStore(memory_url, tmp_path / "reader")
        set_store_factory(lambda: reader)
        model, _ = load_model("store:proj/v2", device="cpu")
        assert not hasattr(model, "peft_config")  # merged into the base fetched from the store
        assert (tmp_path / "reader" / "proj" / "v1" / MANIFEST).is_file()
        assert (tmp_path / "reader" / "proj" / "v2" / "adapter_config.json").is_file()
    finally:
        from training.store import configure

        configure()


@pytest.mark.slow
def test_a_trained_version_is_published_and_read_back_on_another_machine(
    loop_project: Any, settings: Any, tmp_path: Path, memory_url: str
) -> None:
    from training import services
    from training.models import ModelVersion

    from .test_rounds import _run_round

    settings.PREFLOOP_MODEL_STORE = memory_url
    loop_round = _run_round(loop_project)
    version = ModelVersion.objects.get(trained_in=loop_round)
    key = f"{loop_project.slug}/v1"
    assert version.spec == f"store:{key}" and version.store_key == key
    store = ModelStore(memory_url, tmp_path / "elsewhere")
    assert store.exists(key)

    # Another machine: its own var directory, the same store.
    settings.VAR_DIR = tmp_path / "other-machine"
    load_model(version.spec, device="cpu")
    cached = services.models_dir(loop_project) / "v1"
    assert cached == tmp_path / "other-machine" / "models" / key
    assert (cached / MANIFEST).read_bytes() == (tmp_path / "models" / key / MANIFEST).read_bytes()
