"""Snakemake adapter: Table 1 (accuracy per training set) and Table 2 (real + synthetic compared)."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.report.tables import comparison_table, read_runs, table1, write_table  # noqa: E402

params, output = snakemake.params, snakemake.output
runs = read_runs(snakemake.input)
write_table(table1(runs, params.datasets, params.generators, params.trainsets, params.seeds, params.shots, params.n_synth),
            output.table1_csv, output.table1_md, output.table1_html)
write_table(comparison_table(runs, params.datasets, params.generators, params.seeds, params.shots, params.n_synth,
                             params.paper_names, params.methods),
            output.table2_csv, output.table2_md, output.table2_html)
log.info("tables from %d classifier runs", len(runs))
