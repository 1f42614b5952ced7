"""The committed records of finished runs and the tables generated from them (`records`,
`results_table`, `ablation_table`): bookkeeping of this repository, not part of the library."""
