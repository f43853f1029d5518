"""What the pages call: reads, review, imports, starting and watching jobs. One module per area
(home, trials, generate, review, finetune, analysis). Pages render only: they never open a store
connection, import core.store or duckdb, or start a process themselves."""
