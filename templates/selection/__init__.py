"""Source selection: rank candidate sources on frozen features of the target data before
paying to train one (`ranking`: `rank_sources`, `select_source`; `transferability`: the
estimates, LogME, LEEP, H-score and the probes; `candidates`: image backbones spelled as
the recipes spell them).

Imports only from the floors below (`data`, `models`, `reports`, `training`).
"""
