from .hooks import BurnInHook, EMATeacherHook
from .train_step import DomainAdaptiveStep, check_losses_finite
from .trainer import DomainAdaptiveTrainer

__all__ = ["BurnInHook", "DomainAdaptiveStep", "DomainAdaptiveTrainer", "EMATeacherHook", "check_losses_finite"]
