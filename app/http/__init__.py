"""What pages (app/web) and the JSON API (app/api) share: the request dependencies (database
session, settings, artifact store, the signed-in user, CSRF) as `Annotated` aliases, owned-object
lookups, id parsing, the upload route class and the file responses. Imports app.services and
app.models; never app.web or app.api (and no Jinja)."""
