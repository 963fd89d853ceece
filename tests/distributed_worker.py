"""Entry point for the two-process test (spawned by detectron2's launch, so it lives in
an importable module)."""
import os

import torch


def train_and_dump_teacher(config_file, output_dir):
    from detectron2.config import get_cfg
    from detectron2.utils import comm

    from mic_det import add_mic_config
    from mic_det.engine import DomainAdaptiveTrainer

    cfg = get_cfg()
    add_mic_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.OUTPUT_DIR = output_dir
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    rank = comm.get_rank()
    torch.save(trainer.teacher.state_dict(), os.path.join(output_dir, f"teacher_rank{rank}.pth"))
    torch.save(trainer.student.state_dict(), os.path.join(output_dir, f"student_rank{rank}.pth"))
    if trainer.dynamic_threshold is not None:
        torch.save(trainer.dynamic_threshold.state_dict(), os.path.join(output_dir, f"threshold_rank{rank}.pth"))
