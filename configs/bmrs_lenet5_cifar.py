"""BMRS set-up `bmrs_lenet5_cifar` (Wright et al., 2024, Appendix C); the argument picks the criterion.

  python -m sparsejax.main --config=configs/bmrs_lenet5_cifar.py:bmrs_u4 --config.seeds=3

Criteria: none, snr, expected_theta, l2, bmrs_n (default), bmrs_u8, bmrs_u4.
"""

from sparsejax.runner.presets import bmrs_config


def get_config(criterion: str = "bmrs_n"):
  return bmrs_config("bmrs_lenet5_cifar", criterion)
