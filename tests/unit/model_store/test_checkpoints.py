import numpy as np
import pytest

from model_store.checkpoints import CheckpointError, CheckpointStore


def test_round_trip_state_and_tensors(tmp_path):
    store = CheckpointStore(tmp_path)
    t = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    store.save({"a": [1, 2], "b": {"c": "d"}}, t, meta={"offsets": [["t", 0, 5]]})
    (got,) = store.load_latest()
    assert got.parent is None and got.state == {"a": [1, 2], "b": {"c": "d"}}
    np.testing.assert_array_equal(got.tensors["w"], t["w"])
    assert got.meta["offsets"] == [["t", 0, 5]]


def test_retention_keeps_newest(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for i in range(5):
        store.save({"i": i})
    assert [p.name for p in store.list()] == ["ckpt-000000004", "ckpt-000000005"]
    assert store.load_latest()[-1].state == {"i": 4}


def test_corrupt_checkpoint_is_refused_and_last_good_loads(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save({"i": 1}, {"w": np.ones(3, dtype=np.float32)})
    bad = store.save({"i": 2}, {"w": np.ones(3, dtype=np.float32)})
    data = bytearray((bad / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        store.load(bad)
    assert store.load_latest()[-1].state == {"i": 1}


def test_foreign_checkpoint_is_refused_with_clear_error(tmp_path):
    store = CheckpointStore(tmp_path)
    foreign = tmp_path / "ckpt-000000009"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"format": "pytorch", "files": {}}')
    with pytest.raises(CheckpointError, match="not a freshrec checkpoint"):
        store.load(foreign)
    pickle_like = tmp_path / "ckpt-000000010"
    pickle_like.mkdir()
    (pickle_like / "manifest.json").write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        store.load(pickle_like)
    assert store.load_latest() == []


def test_manifest_naming_other_files_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    p = store.save({"i": 1})
    (p / "model.pt").write_bytes(b"x")
    text = (p / "manifest.json").read_text().replace('"files": {', '"files": {"model.pt": "00",')
    (p / "manifest.json").write_text(text)
    with pytest.raises(CheckpointError, match="unexpected file"):
        store.load(p)


def test_a_delta_chain_loads_base_first_and_retention_keeps_what_it_builds_on(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    base = store.save({"i": 0})
    last = base
    for i in range(1, 5):  # four deltas, each over the one before
        last = store.save({"i": i}, parent=last)
    chain = store.load_latest()
    assert [c.state["i"] for c in chain] == [0, 1, 2, 3, 4]
    assert chain[0].parent is None and chain[-1].parent == chain[-2].path.name
    # Only two are "kept", but all five are there: the newest two build on the rest.
    assert len(store.list()) == 5
    full = store.save({"i": 5})  # compaction: a full one
    store.save({"i": 6}, parent=full)
    assert [p.name for p in store.list()] == [full.name, store.list()[-1].name]
    assert [c.state["i"] for c in store.load_latest()] == [5, 6]


def test_a_chain_with_a_corrupt_link_falls_back_to_an_older_whole_chain(tmp_path):
    store = CheckpointStore(tmp_path, keep=5)
    base = store.save({"i": 0})
    mid = store.save({"i": 1}, parent=base)
    store.save({"i": 2}, parent=mid)
    (mid / "state.json.gz").write_bytes(b"garbage")
    assert [c.state["i"] for c in store.load_latest()] == [0]  # 2 and 1 need the bad link
    with pytest.raises(CheckpointError):
        store.save({"i": 3}, parent=tmp_path / "ckpt-000000099")


@pytest.mark.parametrize("fail_on", [1, 2, 3])  # state, tensors, manifest
def test_a_write_that_fails_leaves_no_trace_and_the_chain_goes_on(tmp_path, monkeypatch,
                                                                   fail_on):
    import errno

    import model_store.checkpoints as ckpt

    store = CheckpointStore(tmp_path)
    base = store.save({"i": 1}, {"w": np.ones(3, dtype=np.float32)})
    real, calls = ckpt._write_synced, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == fail_on:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", full_disk)
    with pytest.raises(ckpt.CheckpointUnavailable, match="No space left on device"):
        store.save({"i": 2}, {"w": np.zeros(3, dtype=np.float32)}, parent=base)
    monkeypatch.setattr(ckpt, "_write_synced", real)
    assert [p.name for p in tmp_path.iterdir()] == [base.name]  # no half-written folder
    assert [c.state for c in store.load_latest()] == [{"i": 1}]
    delta = store.save({"i": 3}, parent=base)  # room again: the chain goes on from its tip
    assert [c.state for c in store.load_chain(delta)] == [{"i": 1}, {"i": 3}]
