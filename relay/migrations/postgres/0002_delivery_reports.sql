-- Delivery reports look SMS up by the provider's id.
CREATE INDEX sms_outbox_provider ON sms_outbox(provider_id);

-- The last delivery report recorded, so that repeated callbacks add no duplicate audit events.
ALTER TABLE sms_outbox ADD COLUMN delivery_status TEXT;
