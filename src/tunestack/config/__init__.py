"""Typed argument groups, one dataclass per concern; the CLI, YAML files and the Python API share them."""

from tunestack.config.args import (
    DataArgs,
    DownloadArgs,
    ModelsArgs,
    EvalArgs,
    ExportArgs,
    InferArgs,
    DecodingArgs,
    ModelArgs,
    ParallelArgs,
    PlanArgs,
    RuntimeArgs,
    ServeArgs,
    TrainArgs,
    TunerArgs,
)
from tunestack.config.align import (CpoArgs, DpoArgs, GrpoArgs, KtoArgs, OrpoArgs, PpoArgs, RlooArgs, RmArgs,
                                    SimpoArgs)
from tunestack.config.parse import parse_groups
from tunestack.config.ui import UiArgs
from tunestack.config.wizard import WizardArgs

__all__ = [
    "CpoArgs",
    "DpoArgs",
    "GrpoArgs",
    "KtoArgs",
    "OrpoArgs",
    "PpoArgs",
    "RlooArgs",
    "RmArgs",
    "SimpoArgs",
    "DataArgs",
    "DownloadArgs",
    "ModelsArgs",
    "EvalArgs",
    "ExportArgs",
    "InferArgs",
    "DecodingArgs",
    "ModelArgs",
    "ParallelArgs",
    "PlanArgs",
    "RuntimeArgs",
    "ServeArgs",
    "TrainArgs",
    "TunerArgs",
    "UiArgs",
    "WizardArgs",
    "parse_groups",
]
