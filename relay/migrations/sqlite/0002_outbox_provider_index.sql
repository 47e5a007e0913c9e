-- Delivery reports look SMS up by the provider's id.
CREATE INDEX sms_outbox_provider ON sms_outbox(provider_id);
