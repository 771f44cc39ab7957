"""Business logic over the database and the artifact store; routes and tasks stay thin."""
