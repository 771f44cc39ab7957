"""Pure, torch-free domain code shared by the web process and the workers: the technique
catalogue, the task-kind registry, estimates, statistics and metrics. Imports nothing from
app.services, app.web, app.api or worker, and touches no database or artifact store."""
