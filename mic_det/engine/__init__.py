from .hooks import PreemptionHook, TeacherHook
from .train_step import DomainAdaptiveStep, check_losses_finite
from .trainer import DomainAdaptiveTrainer

__all__ = ["DomainAdaptiveStep", "DomainAdaptiveTrainer", "PreemptionHook", "TeacherHook", "check_losses_finite"]
