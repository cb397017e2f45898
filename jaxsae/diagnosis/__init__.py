"""Diagnosis of a trained SAE or a dictionary against the joint problem (``diagnose``)."""

from ._diagnose import diagnose as diagnose
from ._result import Diagnosis as Diagnosis
