-- Permission checks run as the caller: switch to the caller's role (from the
-- allow-list, realtime.allowed_roles) with the caller's claims and channel bound as
-- transaction-local settings.
CREATE OR REPLACE FUNCTION realtime.assume_caller(p_role text, p_claims text, p_channel text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_role <> ALL (realtime.allowed_roles()) THEN
    RAISE EXCEPTION 'role % is not allowed', p_role USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('request.jwt.claims', coalesce(p_claims, '{}'), true);
  PERFORM set_config('realtime.channel_name', coalesce(p_channel, ''), true);
  EXECUTE format('SET LOCAL ROLE %I', p_role);
END $$;
