"""Tools that read and extend finished runs: tables, merges, post-training sweeps.

* :mod:`sparsejax.studies.report`: Markdown tables of a workdir's ``runs.csv``;
* :mod:`sparsejax.studies.merge`: joins SLURM array tasks' workdirs;
* :mod:`sparsejax.studies.bmrs_report`: BMRS runs beside the paper's Table 1;
* :mod:`sparsejax.studies.bmrs_posthoc`: BMRS's post-training
  compression-vs-accuracy sweep.
"""
