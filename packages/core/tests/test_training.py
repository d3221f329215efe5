import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from leanlm.core.distributed import _drop_flag, launch_command
from leanlm.core.errors import UserError
from leanlm.core.training import deepspeed_config, last_checkpoint, resolve_deepspeed, training_arguments


def test_defaults_then_overrides_then_hardware(tmp_path):
    args = training_arguments(
        tmp_path,
        {"learning_rate": 3e-2, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03},
        {"learning_rate": 1e-3, "num_train_epochs": None},
    )
    assert args.learning_rate == 1e-3  # override wins
    assert args.lr_scheduler_type == "cosine"  # default kept
    assert args.warmup_steps == 0.03  # ratio mapped to fractional warmup_steps
    assert args.num_train_epochs == 3  # None override ignored -> HF default
    assert args.use_cpu and not args.fp16  # no CUDA here
    assert args.report_to in ([], "none", ["none"]) or not args.report_to


def test_unknown_option_suggests_nearest(tmp_path):
    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        training_arguments(tmp_path, {"learning_rte": 1.0})


@pytest.mark.parametrize("choice", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_deepspeed_presets_written(tmp_path, choice):
    path = Path(resolve_deepspeed(choice, tmp_path))
    cfg = json.loads(path.read_text())
    zero = cfg["zero_optimization"]
    assert zero["stage"] == (3 if choice.startswith("zero3") else 2)
    assert ("offload_optimizer" in zero) == choice.endswith("offload")
    assert ("offload_param" in zero) == (choice == "zero3_offload")


def test_deepspeed_bad_choice(tmp_path):
    with pytest.raises(UserError, match="zero2"):
        resolve_deepspeed("zero5", tmp_path)
    with pytest.raises(UserError):
        deepspeed_config(stage=1)


def test_fsdp_preset_accepted(tmp_path):
    from leanlm.core.testing.tiny_models import tiny_llama

    args = training_arguments(tmp_path, {}, fsdp=True, model=tiny_llama(num_layers=1))
    assert args.fsdp and args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]


def test_last_checkpoint(tmp_path):
    assert last_checkpoint(tmp_path / "none") is None
    for n in (5, 40, 12):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps({"global_step": n}))
    assert last_checkpoint(tmp_path).endswith("checkpoint-40")


def test_launch_command_and_flag_drop():
    cmd = launch_command(4, ["train.py", "--x", "1"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=4" in cmd
    assert _drop_flag(["s", "--nproc", "2", "--a", "1", "--nproc=3"], "--nproc") == ["s", "--a", "1"]


def test_torchrun_two_process_trainer_step(tmp_path):
    script = Path(__file__).with_name("ddp_step_script.py")
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and all(r["dist"] for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)  # DDP kept replicas equal


def test_incomplete_checkpoints_are_skipped_and_moved_aside(tmp_path, caplog):
    for n in (2, 4, 6):
        (tmp_path / f"checkpoint-{n}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6, "log_hist')  # torn
    assert last_checkpoint(tmp_path).endswith("checkpoint-4")
    assert (tmp_path / "incomplete-checkpoint-6").is_dir() and not (tmp_path / "checkpoint-6").exists()
    assert "checkpoint-6 is incomplete" in caplog.text
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()  # a kill before it was written
    assert last_checkpoint(tmp_path).endswith("checkpoint-2")


def _resume_script(out: Path, mode: str) -> subprocess.CompletedProcess:
    script = Path(__file__).with_name("resume_kill_script.py")
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(script), str(out), mode], env=env, capture_output=True, text=True, timeout=300
    )


def test_kill_mid_checkpoint_save_then_resume(tmp_path):
    reference = _resume_script(tmp_path / "reference", "run")
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = _resume_script(tmp_path / "killed", "kill-at-4")
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "killed" / "run"
    assert (run / "checkpoint-4").is_dir() and not (run / "checkpoint-4" / "trainer_state.json").exists()
    resumed = _resume_script(tmp_path / "killed", "run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-4 is incomplete" in resumed.stderr
    result = json.loads((tmp_path / "killed" / "run.json").read_text())
    ref = json.loads((tmp_path / "reference" / "run.json").read_text())
    assert result["resumed_from"] == "checkpoint-2" and result["step"] == 6
    assert (run / "incomplete-checkpoint-4").is_dir()
    assert result["checksum"] == pytest.approx(ref["checksum"], rel=1e-6)  # same as never killed
