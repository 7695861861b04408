"""mf.save / mf.load under faults: what is refused before writing, truncated and corrupt files,
an exception or a kill in the middle of a save, symlinks, nested objects, safetensors compatibility."""
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
import minifuse.optim as optim
from minifuse import safetensors_file


def listing(folder):
    return sorted(os.listdir(folder))


def test_zero_dim_tensors_round_trip_as_zero_dim(tmp_path):
    model = nn.Linear(3, 2)
    model.register_buffer("count", mf.tensor(7))
    mf.save(model.state_dict(), tmp_path / "m.safetensors")
    back = mf.load(tmp_path / "m.safetensors")
    assert back["count"].shape == () and back["count"].item() == 7
    other = nn.Linear(3, 2)
    other.register_buffer("count", mf.tensor(0))
    other.load_state_dict(back)     # a module reloads its own checkpoint
    assert other.count.shape == () and other.count.item() == 7


def test_a_module_is_saved_as_its_state_dict(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    mf.save(model, tmp_path / "m.safetensors")
    back = mf.load(tmp_path / "m.safetensors")
    assert set(back) == set(model.state_dict())
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"pass SGD.state_dict\(\)"):
        mf.save(opt, tmp_path / "o.safetensors")


def test_what_cannot_be_saved_is_refused_before_writing_naming_the_key(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        mf.save({"__metadata__": np.ones(2)}, path)
    with pytest.raises(TypeError, match="'bad' has dtype complex128"):
        mf.save({"ok": np.ones(2), "bad": np.ones(2, complex)}, path)
    with pytest.raises(TypeError, match="'bad' has dtype object"):
        mf.save({"ok": np.ones(2), "bad": np.array([None, 1])}, path)
    with pytest.raises(TypeError, match="'state.0.f' is a function"):
        mf.save({"state": {0: {"f": lambda: 0}}}, path)
    with pytest.raises(TypeError, match="keys must be strings or integers"):
        mf.save({"w": {(1, 2): 3}}, path)
    assert listing(tmp_path) == []


def test_nested_objects_round_trip_with_their_types(tmp_path):
    obj = {"state": {0: {"step": 3, "buf": mf.tensor([1.5, -0.0])}, 7: {}},
           "groups": [{"lr": 0.1, "betas": (0.9, 0.999), "nesterov": False, "name": None}],
           "scalar": np.float32(2.5), "inf": float("inf"), "huge": 2 ** 70, "text": "héllo"}
    mf.save(obj, tmp_path / "o.safetensors")
    back = mf.load(tmp_path / "o.safetensors")
    assert back["state"][0]["buf"].numpy().tobytes() == obj["state"][0]["buf"].numpy().tobytes()
    back["state"][0]["buf"] = obj["state"][0]["buf"]
    assert back == obj
    assert type(back["groups"][0]["betas"]) is tuple and type(back["scalar"]) is np.float32
    assert list(back["state"]) == [0, 7]


def test_files_are_compatible_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    sd = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(4, np.int64),
          "e": np.zeros((0, 2), np.float16), "b": np.array([True, False])}
    mf.save(sd, tmp_path / "a.safetensors")
    theirs = st.load_file(str(tmp_path / "a.safetensors"))
    st.save_file(sd, str(tmp_path / "b.safetensors"))
    ours = mf.load(tmp_path / "b.safetensors")
    for k, v in sd.items():
        assert theirs[k].shape == v.shape and theirs[k].tobytes() == v.tobytes()
        assert ours[k].shape == v.shape and ours[k].numpy().tobytes() == v.tobytes()


def write_raw(path, header, data=b""):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_unsupported_dtype_names_the_file_and_the_tensor(tmp_path):
    path = tmp_path / "f8.safetensors"
    write_raw(path, {"ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                     "scale": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [4, 6]}}, b"\0" * 6)
    with pytest.raises(ValueError, match=rf"{path}: tensor 'scale' has dtype 'F8_E4M3'"):
        mf.load(path)


@pytest.mark.parametrize("header, match", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, "tensor 'w' ends at byte 16"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "tensor 'w' .* needs 12 bytes"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, "non-negative integers"),
    ({"w": {"shape": [1]}}, "has no dtype"),
    ([1, 2], "not an object"),
], ids=["truncated-data", "offsets-vs-shape", "negative-shape", "incomplete-entry", "header-list"])
def test_damaged_headers_are_clear_errors(tmp_path, header, match):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, b"\0" * 8)
    with pytest.raises(ValueError, match=match):
        mf.load(path)


def test_every_truncation_and_a_corrupt_header_are_clear_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    mf.save({"a": np.arange(5.0), "b": {"c": np.ones(3, np.float32)}}, path)
    data = path.read_bytes()
    for cut in range(len(data)):            # every prefix of the file
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a valid"):
            mf.load(path)
    n = struct.unpack("<Q", data[:8])[0]
    path.write_bytes(data[:8] + b"}" + data[9:])
    with pytest.raises(ValueError, match="header is not JSON"):
        mf.load(path)
    assert n > 0


def test_an_exception_in_the_middle_of_a_save_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    mf.save({"w": np.zeros(3)}, path)
    before = path.read_bytes()
    calls = []

    def fail_on_second(f, a):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        f.write(a.tobytes())

    monkeypatch.setattr(safetensors_file, "write_array", fail_on_second)
    with pytest.raises(OSError, match=f"save: cannot write {path}: No space left"):
        mf.save({"w": np.ones(3), "v": np.ones(4)}, path)
    assert path.read_bytes() == before and listing(tmp_path) == ["m.safetensors"]
    monkeypatch.undo()
    fresh = tmp_path / "new.safetensors"
    monkeypatch.setattr(safetensors_file, "write_array", fail_on_second)
    calls.clear()
    with pytest.raises(OSError):
        mf.save({"w": np.ones(3), "v": np.ones(4)}, fresh)
    assert listing(tmp_path) == ["m.safetensors"]


KILLED_SAVE = textwrap.dedent("""
    import sys, time
    import numpy as np
    import minifuse as mf
    from minifuse import safetensors_file

    def slow(f, a):
        f.write(a.tobytes()[: a.nbytes // 2])
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    safetensors_file.write_array = slow
    mf.save({"w": np.ones(1 << 20)}, sys.argv[1])
""")


@pytest.mark.skipif(sys.platform != "linux", reason="unnamed files (O_TMPFILE) are Linux's")
@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "replacing"])
def test_a_save_killed_midway_leaves_no_temporary_file(tmp_path, existing):
    path = tmp_path / "m.safetensors"
    if existing:
        mf.save({"w": np.zeros(3)}, path)
    before = path.read_bytes() if existing else None
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert listing(tmp_path) == (["m.safetensors"] if existing else [])
    if existing:
        assert path.read_bytes() == before


def test_saving_to_a_symlink_writes_through_to_its_target(tmp_path):
    target = tmp_path / "real.safetensors"
    link = tmp_path / "latest.safetensors"
    mf.save({"w": np.zeros(2)}, target)
    link.symlink_to(target.name)
    mf.save({"w": np.ones(2)}, link)
    assert link.is_symlink() and os.readlink(link) == target.name
    assert np.array_equal(mf.load(target)["w"].numpy(), np.ones(2))
    assert listing(tmp_path) == ["latest.safetensors", "real.safetensors"]


def test_errors_name_the_destination(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "m.safetensors"
    with pytest.raises(FileNotFoundError, match=f"save: cannot write {missing}"):
        mf.save({"w": np.zeros(2)}, missing)


def test_without_unnamed_files_a_failed_save_still_leaves_nothing(tmp_path, monkeypatch):
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p != "/proc/self/fd" and real_isdir(p))
    path = tmp_path / "m.safetensors"
    mf.save({"w": np.zeros(3)}, path)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~current_umask())
    monkeypatch.setattr(safetensors_file, "write_array", lambda f, a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        mf.save({"w": np.ones(3)}, path)
    assert listing(tmp_path) == ["m.safetensors"] and mf.load(path)["w"].numpy().sum() == 0


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_directory_or_a_huge_shape_is_a_clear_error(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        mf.load(tmp_path)
    path = tmp_path / "huge.safetensors"
    write_raw(path, {"w": {"dtype": "F64", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ValueError, match="needs 9671406556917033397649408 bytes"):
        mf.load(path)
