-- Evidence upload queue, second step (DESIGN.md rule 7, issue 4).
--
-- uploads.path is relative to the client's folder ("evidence/<sha256>"),
-- so the queue survives the app's data folder moving (iOS moves it on
-- updates). upload_url is the tus upload's path ("/api/v1/uploads/<id>"),
-- or an absolute URL if the server sent one on another host; offset is the
-- last offset the server confirmed. state is pending, done or failed:
-- failed means the upload can never succeed as queued (the local file no
-- longer matches its hash, or the server refused it for good); error says
-- why. failures counts hash mismatches the server reported while the local
-- file still matched (a second one fails the upload).
ALTER TABLE uploads ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';
CREATE INDEX uploads_state ON uploads(state, created_at);
