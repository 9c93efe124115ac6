"""Nothing lost, nothing silently wrong (issue 19): one run per folder at a time, checkpoints that
carry checksums and their run's id, a resume that takes only its own run's files, and one error line
for every damaged file or unusable path."""

import contextlib
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import time

import pytest
import torch

from ada2i_fast import Ada2I, evaluate, predict, report, train
from ada2i_fast.checkpointing import pretrained, torch_file
from ada2i_fast.checkpointing.torch_file import CHECKSUMS, write_checkpoint
from ada2i_fast.training import trainer
from ada2i_fast.training.checkpoint import load_any_checkpoint
from ada2i_fast.training.metric_log import read_history
from ada2i_fast.training.run_folder import RunLock
from ada2i_fast.training.step import train_step
from conftest import tiny_config
from test_fuzz_loaders import _time_limit

TINY = ["--dataset", "meld", "--size", "0.05", "--hidden", "16", "--rank", "3", "--ffn-dim", "32",
        "--drop-rate", "0.1", "--lr", "2e-3", "--quiet"]


def _run(out, *extra):
    return train.main([*TINY, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    _run(out, "--epochs", "2", "--keep-last")
    return out


def _interrupted_run(out, monkeypatch, after_step=3):
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == after_step:
            os.kill(os.getpid(), signal.SIGINT)
        return train_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(SystemExit):
        _run(out, "--epochs", "2")
    monkeypatch.undo()
    return out


def _hold_lock(out, ready, release):
    lock = RunLock(out)
    ready.set()
    release.wait(60)
    lock.release()


# --- 1. one run per folder --------------------------------------------------------------------

def test_a_folder_in_use_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(out, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(SystemExit, match=rf"^error: {out} is in use by process {holder.pid} on .* since "):
            _run(out, "--epochs", "1")
        with pytest.raises(SystemExit, match=rf"is in use by process {holder.pid}"):
            train.main(["--resume", str(out), "--quiet"])
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    _run(out, "--epochs", "1")  # the kernel released the dead holder's lock
    assert (out / "summary.json").is_file() and (out / ".lock").read_text() == ""


def test_the_history_is_read_by_epoch_numbers_and_a_damaged_line_is_named(tmp_path):
    records = [{"epoch": e, "n": i} for i, e in enumerate((1, 1, 2, 2, 3))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [(r["epoch"], r["n"]) for r in read_history(tmp_path, 2)] == [(1, 1), (2, 3)]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match=r"no line for epoch 3 although the saved state has 3"):
        read_history(tmp_path, 3)
    with open(tmp_path / "metrics.jsonl", "a") as metrics:
        metrics.write("garbage\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 3: not JSON"):
        read_history(tmp_path, 2)


# --- 2. a resume takes only its own run's files ------------------------------------------------

def test_another_runs_last_pt_or_one_with_non_finite_weights_is_not_resumed(finished, tmp_path, monkeypatch):
    out = _interrupted_run(tmp_path / "b", monkeypatch)
    own = torch.load(out / "last.pt", weights_only=False)
    shutil.copy(finished / "last.pt", out / "last.pt")
    with pytest.raises(SystemExit, match=r"last\.pt belongs to another run \(\w+\) than the one .* holds \(\w+, "
                                         r"started .*\); refusing to mix two runs"):
        train.main(["--resume", str(out), "--quiet"])
    own.pop(CHECKSUMS)
    own["model"]["head.fc_out.weight"][0, 0] = float("nan")
    write_checkpoint(out / "last.pt", own)
    with pytest.raises(SystemExit, match=r"last\.pt: the weight 'head\.fc_out\.weight' holds NaN or inf"):
        train.main(["--resume", str(out), "--quiet"])


# --- 3. checksums ------------------------------------------------------------------------------

def _flip_bytes_inside(path, tensor):
    """Flip 64 bytes in the middle of ``tensor``'s data inside the file ``path``."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0
    middle = at + len(raw) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file", ["best.pt", "last.pt"])
def test_flipped_bytes_inside_a_checkpoints_tensors_are_refused_everywhere(finished, tmp_path, file):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    payload = torch.load(out / file, weights_only=False)
    weights = payload["state_dict" if file == "best.pt" else "model"]
    _flip_bytes_inside(out / file, weights["encoders.t.lin_out.weight"])
    refused = rf"^error: .*{file}: the tensor /(state_dict|model)/encoders\.t\.lin_out\.weight differs from the " \
              r"checksum written with it"
    with pytest.raises(SystemExit, match=refused):
        evaluate.main(["--checkpoint", str(out / file)])
    with pytest.raises(SystemExit, match=refused):
        predict.main(["--checkpoint", str(out / file), "--out", str(tmp_path / "p.jsonl")])
    if file == "last.pt":
        (out / "summary.json").unlink()
        with pytest.raises(SystemExit, match=refused):
            train.main(["--resume", str(out), "--quiet"])


def test_edited_metadata_is_refused_and_files_without_checksums_still_load(finished, tmp_path):
    payload = torch.load(finished / "best.pt", weights_only=False)
    payload["metadata"]["dev_weighted_f1"] = 0.99
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(SystemExit, match=r"edited\.pt: its metadata differs from the checksum"):
        evaluate.main(["--checkpoint", str(tmp_path / "edited.pt")])
    payload.pop(CHECKSUMS)
    torch.save(payload, tmp_path / "older.pt")  # as written before checksums existed
    assert evaluate.main(["--checkpoint", str(tmp_path / "older.pt")])["weighted_f1"] > 0


# --- 5. sizes read from a file -----------------------------------------------------------------

def _rewritten(source, edit, dest):
    """``source``'s payload changed by ``edit``, written to ``dest`` with fresh checksums (as a writer would)."""
    payload = torch.load(source, weights_only=False)
    payload.pop(CHECKSUMS)
    edit(payload)
    write_checkpoint(dest, payload)


def test_a_checkpoint_asking_for_a_huge_synthetic_corpus_is_one_error_line(finished, tmp_path):
    _rewritten(finished / "best.pt", lambda p: p["metadata"].update(size=1e5), tmp_path / "huge.pt")
    with pytest.raises(SystemExit, match=r"^error: synthetic size 100000.0 needs about .* choose a smaller --size"):
        evaluate.main(["--checkpoint", str(tmp_path / "huge.pt")])


# --- 7. one error line, never a traceback ------------------------------------------------------

@pytest.mark.parametrize("torch_says", [
    "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: file write failed",
    "[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 4023",
])
def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_no_temp_file(tmp_path, monkeypatch, torch_says):
    out = tmp_path / "run"

    def full(obj, handle):
        handle.write(b"partial")
        raise RuntimeError(torch_says)

    monkeypatch.setattr(torch_file.torch, "save", full)
    with pytest.raises(SystemExit, match=rf"^error: no space left on the device of {out} while writing best\.pt "
                                         r"\(any earlier best\.pt is intact\); free some space"):
        _run(out, "--epochs", "1")
    assert not list(out.glob(".*.tmp")) and not (out / "best.pt").exists()


def test_an_unwritable_tensorboard_folder_is_one_line_without_the_writer_threads_traceback(tmp_path, monkeypatch,
                                                                                            capfd):
    from tensorboard.summary.writer import record_writer

    def refused(self, data):  # what writing into a folder without write permission raises, in the writer's thread
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(record_writer.RecordWriter, "write", refused)
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=rf"^error: --tensorboard: cannot write into {out / 'tensorboard'} "
                                         r"\(Permission denied\)$"):
        _run(out, "--epochs", "1", "--tensorboard")
    time.sleep(0.2)  # the writer thread has ended
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("run_info"), r"the run state lacks run_info"),
    (lambda s: s.pop("rng"), r"the run state lacks rng"),
    (lambda s: s["train_config"].update(bogus=1), r"unknown TrainConfig field\(s\): bogus"),
    (lambda s: s.update(epoch="2"), r"run state field 'epoch' should be int, found '2'"),
    (lambda s: s["rng"][0].update(torch=torch.zeros(3, dtype=torch.uint8)), r"damaged run state, cannot resume"),
    (lambda s: s["model"].update({"head.fc_out.bias": torch.zeros(3)}), r"'head\.fc_out\.bias' should have shape"),
])
def test_damaged_fields_of_last_pt_are_named(finished, tmp_path, damage, message):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "summary.json").unlink()
    _rewritten(out / "last.pt", damage, out / "last.pt")
    with pytest.raises(SystemExit, match=rf"^error: .*last\.pt: .*{message}"):
        train.main(["--resume", str(out), "--quiet"])


def test_damaged_best_pt_metadata_and_a_damaged_history_are_named(finished, tmp_path):
    _rewritten(finished / "best.pt", lambda p: p["metadata"].update(classes=7), tmp_path / "best.pt")
    with pytest.raises(SystemExit, match=r"best\.pt: metadata 'classes' should be list, found 7"):
        evaluate.main(["--checkpoint", str(tmp_path / "best.pt")])
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "summary.json").unlink()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(SystemExit, match=r"^error: .*metrics\.jsonl, line 2: not JSON"):
        train.main(["--resume", str(out), "--quiet"])


def test_unusable_paths_and_flags_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for out, message in ((a_file / "sub", r"--out .*file/sub: cannot use this folder \(Not a directory\)"),
                         ("/proc/x", r"--out /proc/x: cannot use this folder"),
                         (tmp_path / "dangling", r"--out .*dangling is a symbolic link to nothing")):
        with pytest.raises(SystemExit, match=rf"^error: {message}"):
            _run(out, "--epochs", "1")
    with pytest.raises(SystemExit, match=r"^error: --resume '': no such run folder"):
        train.main(["--resume", ""])
    with pytest.raises(SystemExit, match=r"^error: --seed must be an int >= 0, got -1"):
        _run(tmp_path / "x", "--seed", "-1")


def test_a_refused_payload_is_one_line_without_torchs_advice(tmp_path):
    class Runs:
        def __reduce__(self):
            return (os.system, ("true",))

    buffer = io.BytesIO()
    torch.save({"state_dict": Runs()}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--checkpoint", str(tmp_path / "evil.pt")])
    message = str(refused.value)
    assert message.startswith(f"error: {tmp_path / 'evil.pt'}: not a loadable checkpoint (refused or corrupt): ")
    assert "GLOBAL posix.system" in message and "weights_only" not in message and "\n" not in message


def test_evaluate_takes_last_pt_and_a_run_folder_and_says_which_weights(finished, capsys):
    evaluate.main(["--checkpoint", str(finished / "last.pt")])
    assert "the current weights after 2 epoch(s), not the best-dev state" in capsys.readouterr().out
    evaluate.main(["--checkpoint", str(finished)])
    assert f"model: {finished / 'model'}: the best-dev model (epoch" in capsys.readouterr().out


# --- 8. model folders and run files as hostile as the checkpoints (issue 29) ---------------------

DEEP = "[" * 100_000 + "]" * 100_000
SECONDS = 10.0  # a refusal is immediate; building what a bad config asks for would take minutes or memory


def _model_copy(finished, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(finished / "model", folder)
    return folder


def _edit_config_text(folder, edit):
    path = folder / "config.json"
    path.write_text(edit(json.loads(path.read_text())))


def _refused_quickly(argv, message):
    with _time_limit(SECONDS), pytest.raises(SystemExit, match=message) as refused:
        evaluate.main(argv)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("field, value, message", [
    ("beta", float("nan"), r"not JSON \(NaN is not a JSON number\)"),
    ("beta", float("inf"), r"not JSON \(Infinity is not a JSON number\)"),
    ("beta", 1e308, r"beta must be a finite number in \[-1e\+06, 1e\+06\], got 1e\+308"),
    ("beta", "abc", r"beta must be a finite number .* got 'abc'"),
    ("lambda_modal", float("nan"), r"not JSON \(NaN is not a JSON number\)"),
    ("modalities", ["a", "t", "v"], r"modalities must be a non-empty string of letters from 'atv', got \['a'"),
    ("mmcosine", "no", r"mmcosine must be true or false, got 'no'"),
    ("encoder_nlayers", 10_000_000, r"encoder_nlayers must be an int in \[1, 1000\], got 10000000"),
    ("mmt_nlayers", 10_000_000, r"mmt_nlayers must be an int in \[0, 1000\], got 10000000"),
    ("hidden", 10**9, r"this model \(.* weights: hidden 1000000000, .*\) needs about .* available"),
    ("rank", 10**9, r"this model \(.* weights: .*rank 1000000000, .*\) needs about .* available"),
    ("input_dims", [1, 2, 3], r"input_dims must map each modality to its feature dim, got \[1, 2, 3\]"),
    ("input_dims", {"a": True}, r"input_dims\['a'\] must be an int >= 1, got True"),
])
def test_a_bad_value_in_config_json_is_one_line_before_anything_is_built(finished, tmp_path, field, value, message):
    folder = _model_copy(finished, tmp_path)
    _edit_config_text(folder, lambda c: json.dumps({**c, "ada2i_config": {**c["ada2i_config"], field: value}}))
    _refused_quickly(["--checkpoint", str(folder)], rf"^error: .*config\.json: .*{message}")
    with _time_limit(SECONDS), pytest.raises(SystemExit, match=message):
        predict.main(["--checkpoint", str(folder), "--out", str(tmp_path / "p.jsonl")])


def test_a_100k_deep_config_json_is_one_line(finished, tmp_path):
    folder = _model_copy(finished, tmp_path)
    _edit_config_text(folder, lambda c: json.dumps(c)[:-1] + f', "deep": {DEEP}}}')
    _refused_quickly(["--checkpoint", str(folder)], r"^error: .*config\.json: nested deeper than 32 levels")


def _with_header_checksums(folder, checksums: str) -> None:
    """model.safetensors rewritten with ``checksums`` as its header's checksum field, and config.json
    naming the new file (as a writer would)."""
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file(state, folder / "model.safetensors", metadata={pretrained._CHECKSUMS: checksums})
    _edit_config_text(folder, lambda c: json.dumps({**c, "weights_checksum": pretrained._weights_checksum(checksums)}))


@pytest.mark.parametrize("checksums, message", [
    ("[1, 2]", r"expected a JSON object, found an array"),
    ("null", r"expected a JSON object, found null"),
    ('{"head.fc_out.bias": 7}', r"'head\.fc_out\.bias' should be a string, found a number"),
    (DEEP, r"nested deeper than 32 levels"),
])
def test_a_damaged_checksum_field_of_the_safetensors_header_is_one_line(finished, tmp_path, checksums, message):
    folder = _model_copy(finished, tmp_path)
    _with_header_checksums(folder, checksums)
    _refused_quickly(["--checkpoint", str(folder)],
                     rf"^error: .*model\.safetensors: the header's 'ada2i_checksums': {message}")


def _resumable_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


@pytest.mark.parametrize("file", ["run.json", "metrics.jsonl"])
def test_a_100k_deep_run_file_is_one_line_on_resume(finished, tmp_path, file):
    out = _resumable_copy(finished, tmp_path)
    (out / file).write_text(DEEP + "\n")
    with pytest.raises(SystemExit, match=rf"^error: .*{file}(, line 1)?: nested deeper than 32 levels"):
        train.main(["--resume", str(out), "--epochs", "3", "--quiet"])


def test_a_non_utf8_metrics_jsonl_is_named(finished, tmp_path):
    out = _resumable_copy(finished, tmp_path)
    (out / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n\xff\xfe\n')
    with pytest.raises(SystemExit, match=rf"^error: {out / 'metrics.jsonl'}: not UTF-8 text"):
        train.main(["--resume", str(out), "--epochs", "3", "--quiet"])


@pytest.mark.parametrize("content, message", [
    (DEEP, r"nested deeper than 32 levels"),
    ('{"best_epoch": 1, "classes": [], "test": 3}', r"test has the wrong type \(3\)"),
    ('{"best_epoch": "1", "classes": [], "test": {"confusion_matrix": []}}', r"best_epoch has the wrong type"),
])
def test_a_damaged_summary_json_is_one_line_in_report(finished, tmp_path, content, message):
    out = _resumable_copy(finished, tmp_path)
    (out / "summary.json").write_text(content)
    with pytest.raises(SystemExit, match=rf"^error: .*summary\.json: {message}"):
        report.main([str(out), "--out", str(tmp_path / "report")])


# --- 9. model/ written as one unit (issue 29) ------------------------------------------------------

class _Featuriser:
    """What save_pretrained asks of a featuriser: ``save(folder)`` writing featuriser.json, returning its checksum."""

    def __init__(self, checksum):
        self.checksum = checksum

    def save(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "featuriser.json").write_text(json.dumps({"checksum": self.checksum}))
        return self.checksum


def _model(seed):
    torch.manual_seed(seed)
    return Ada2I(tiny_config())


def test_a_model_folder_holding_files_of_two_saves_is_refused(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _model(1).save_pretrained(first, metadata={"epoch": 1}, featuriser=_Featuriser("f1"))
    _model(2).save_pretrained(second, metadata={"epoch": 2})
    Ada2I.from_pretrained(first)
    mixed = tmp_path / "mixed"
    shutil.copytree(first, mixed)
    shutil.copy(second / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(ValueError, match=rf"^{mixed}: model\.safetensors is not the weights config\.json was saved "
                                         r"with \(a save was cut short, or files of two saves were put together\)"):
        Ada2I.from_pretrained(mixed)
    shutil.rmtree(first / "featuriser")
    with pytest.raises(ValueError, match=r"featuriser/ is missing config\.json was saved with"):
        Ada2I.from_pretrained(first)
    _Featuriser("f2").save(first / "featuriser")
    with pytest.raises(ValueError, match=r"featuriser/ is not the featuriser config\.json was saved with"):
        Ada2I.from_pretrained(first)


def _in_a_child(work, kill_after: float | None = None, once_replaced=None) -> None:
    """Run ``work()`` in a forked child (one thread) and wait for it, or SIGKILL it ``kill_after``
    seconds after it starts (after the file ``once_replaced`` is replaced, when given)."""
    inode = once_replaced.stat().st_ino if once_replaced is not None else None
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            torch.set_num_threads(1)
            work()
        finally:
            os._exit(0)
    while inode is not None and once_replaced.stat().st_ino == inode and not os.waitpid(pid, os.WNOHANG)[0]:
        time.sleep(0.0001)
    if kill_after is not None:
        time.sleep(kill_after)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _same_weights(model, state) -> bool:
    return all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def _loads_what_it_says_or_is_refused(path, by_epoch) -> str:
    """``path`` loads as the model of the epoch its metadata names (one of ``by_epoch``), or is refused."""
    try:
        model, metadata = load_any_checkpoint(path)
    except ValueError as error:
        assert "\n" not in str(error)
        return "refused"
    assert _same_weights(model, by_epoch[metadata["epoch"]]), metadata["weights"]
    return f"epoch {metadata['epoch']}"


def test_a_kill_during_save_pretrained_leaves_the_old_model_or_the_new_one(tmp_path):
    folder, rng = tmp_path / "model", random.Random(0)
    models = {1: _model(1), 2: _model(2)}
    by_epoch = {epoch: model.state_dict() for epoch, model in models.items()}
    start = time.perf_counter()
    models[1].save_pretrained(folder, metadata={"epoch": 1})
    models[2].save_pretrained(folder, metadata={"epoch": 2})
    two_saves = time.perf_counter() - start

    def save_alternately():
        while True:
            for epoch, model in models.items():
                model.save_pretrained(folder, metadata={"epoch": epoch})

    seen = {_loads_what_it_says_or_is_refused(folder, by_epoch)}
    for _ in range(40):
        _in_a_child(save_alternately, kill_after=rng.uniform(0, 3 * two_saves))
        seen.add(_loads_what_it_says_or_is_refused(folder, by_epoch))
    assert {"epoch 1", "epoch 2"} <= seen


def test_a_kill_during_a_resume_extension_leaves_a_model_evaluate_names_truly(finished, tmp_path):
    def extend(out):
        return lambda: train.main(["--resume", str(out), "--epochs", "3", "--quiet"])

    reference = tmp_path / "reference"
    shutil.copytree(finished, reference)
    before, _ = load_any_checkpoint(reference)
    start = time.perf_counter()
    _in_a_child(extend(reference))  # as the killed runs train: one thread
    seconds = time.perf_counter() - start
    after, metadata = load_any_checkpoint(reference)
    by_epoch = {json.loads((finished / "model" / "config.json").read_text())["metadata"]["epoch"]: before.state_dict(),
                metadata["epoch"]: after.state_dict()}
    rng, seen = random.Random(1), []
    for n in range(7):
        out = tmp_path / f"run-{n}"
        shutil.copytree(finished, out)
        if n < 2:  # anywhere in the extension
            _in_a_child(extend(out), kill_after=rng.uniform(0, seconds))
        else:  # in the final save: its new weights are in place, its config may not be
            _in_a_child(extend(out), kill_after=rng.uniform(0, 0.002), once_replaced=out / "model" / "model.safetensors")
        seen.append(_loads_what_it_says_or_is_refused(out, by_epoch))
        if seen[-1] == "refused" and seen.count("refused") == 1:  # --resume finishes the save (the refusal says so)
            with pytest.raises(SystemExit, match=rf"model\.safetensors is not the weights .*; train --resume {out} "
                                                 "writes it again"):
                evaluate.main(["--checkpoint", str(out)])
            train.main(["--resume", str(out), "--quiet"])
            assert _loads_what_it_says_or_is_refused(out, by_epoch) == f"epoch {metadata['epoch']}"
        shutil.rmtree(out)
    assert "refused" in seen and set(seen) - {"refused"}, seen
