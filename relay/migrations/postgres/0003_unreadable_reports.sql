-- The messages each viewer session reported it could not open safely, so that the audit log
-- records `open_failed` once per message and session however often a page reports it.
CREATE TABLE unreadable_reports (
    message_id  TEXT NOT NULL REFERENCES messages(id),
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, session_id)
);
