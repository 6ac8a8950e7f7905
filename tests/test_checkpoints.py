"""Reading weights safely and saving them atomically: every bad file gets a message that says
what it is (and never suggests weights_only=False); a kill mid-write leaves no lasting litter."""

import os
import subprocess
import sys

import pytest
import torch

from detkit.checkpoints import load_weights, remove_stale_temporaries, save_atomic


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def damaged(tmp_path):
    """{kind: (file, the message it must get)}."""
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.ones(3)}}, good)
    files = {
        "empty": (b"", r"is empty \(0 bytes\): not a checkpoint"),
        "random": (bytes(range(7, 250)) * 4, r"is not a torch checkpoint \(it starts with bytes 07 08 09 0a"),
        "truncated": (good.read_bytes()[:300],
                      r"is not a readable torch file: truncated or damaged \(PytorchStreamReader"),
        "pickle garbage": (b"\x80\x02\xffgarbage" * 8, r"is damaged: its pickled data cannot be read"),
    }
    evil = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, evil)
    files["code"] = (evil.read_bytes(), r"refusing to load .*: it carries pickled code .* \(it names print\)")
    return files


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "pickle garbage", "code"])
def test_each_bad_checkpoint_is_named_for_what_it_is(tmp_path, kind, capsys):
    data, message = damaged(tmp_path)[kind]
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as error:
        load_weights(path, "--weights")
    text = str(error.value)
    assert text.startswith((f"--weights: {path}", f"--weights: refusing to load {path}"))
    assert "weights_only" not in text and "()" not in text and "\x1b" not in text
    assert kind == "code" or "pickled code" not in text
    assert "this must never run" not in capsys.readouterr().out


def test_a_kill_mid_write_leaves_a_temporary_that_the_next_start_removes(tmp_path):
    # a child process starts writing and is killed: its temporary stays, the old file is whole
    save_atomic({"w": torch.zeros(2)}, tmp_path / "last.pth")
    script = ("import os, signal, torch; from detkit.checkpoints import save_atomic\n"
              "real = torch.save\n"
              "def half(obj, f):\n    f.write(b'x' * 1000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
              f"torch.save = half\nsave_atomic({{'w': torch.ones(2)}}, {str(tmp_path / 'last.pth')!r})\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -9
    left = list(tmp_path.glob(".last.pth.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size == 1000
    assert torch.equal(load_weights(tmp_path / "last.pth")["w"], torch.zeros(2))
    # another writer that is alive (this process) keeps its temporary; names of other files are left alone
    live = tmp_path / f".last.pth.{os.getpid()}.abc123.tmp"
    live.write_bytes(b"being written")
    legacy = tmp_path / ".best.pth.q1w2e3.tmp"  # written before the pid was in the name: nobody's now
    legacy.write_bytes(b"old")
    other = tmp_path / ".notes.tmp"
    other.write_text("not ours")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([left[0], legacy])
    assert live.exists() and other.exists() and not left[0].exists() and not legacy.exists()
