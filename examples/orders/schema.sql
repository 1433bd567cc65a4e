-- Order tracking on pgrealtime: the application's table, who sees what, and the trigger
-- that turns every change of an order into a realtime message. Applied by run.py after
-- the server has migrated the database (it needs realtime.* and auth.*); safe to re-run.

CREATE TABLE IF NOT EXISTS public.orders (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  customer   uuid NOT NULL,
  item       text NOT NULL,
  status     text NOT NULL DEFAULT 'placed',
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Row level security: a customer sees only their own orders. This one policy governs
-- both what the app shows and which db:orders changes the realtime server delivers.
GRANT SELECT ON public.orders TO authenticated;
ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS customers_see_own_orders ON public.orders;
CREATE POLICY customers_see_own_orders ON public.orders FOR SELECT TO authenticated
  USING (customer = auth.uid());

-- Who may subscribe (policies on realtime.channels, see docs/permissions.md): the
-- channel order:<id> only by that order's customer; chat:* by anyone signed in. The
-- defaults (any signed-in user, any channel) are replaced.
DROP POLICY IF EXISTS allow_authenticated_subscribe ON realtime.channels;
DROP POLICY IF EXISTS orders_subscribe_own ON realtime.channels;
CREATE POLICY orders_subscribe_own ON realtime.channels FOR SELECT TO authenticated
  USING (pattern = 'order:*' AND EXISTS (
    SELECT 1 FROM public.orders o
    WHERE o.id::text = split_part(realtime.channel_name(), ':', 2) AND o.customer = auth.uid()));
DROP POLICY IF EXISTS chat_subscribe_signed_in ON realtime.channels;
CREATE POLICY chat_subscribe_signed_in ON realtime.channels FOR SELECT TO authenticated
  USING (pattern = 'chat:*');

-- Who may publish (policies on realtime.messages): users only in chat rooms, as
-- themselves. Order updates come from the trigger below, never from a browser.
DROP POLICY IF EXISTS allow_authenticated_publish ON realtime.messages;
DROP POLICY IF EXISTS chat_publish_as_self ON realtime.messages;
CREATE POLICY chat_publish_as_self ON realtime.messages FOR INSERT TO authenticated
  WITH CHECK (channel_name LIKE 'chat:%' AND sender_id = auth.uid());

-- Every new order and status change becomes a message on order:<id>: stored (history
-- on load, resume after a reconnect) and POSTed to the channel's webhook.
CREATE OR REPLACE FUNCTION public.orders_publish() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
  PERFORM realtime.publish(
    'order:' || NEW.id,
    CASE WHEN TG_OP = 'INSERT' THEN 'order.placed' ELSE 'order.' || NEW.status END,
    jsonb_build_object('orderId', NEW.id, 'item', NEW.item, 'status', NEW.status));
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS orders_publish ON public.orders;
CREATE TRIGGER orders_publish AFTER INSERT OR UPDATE OF status ON public.orders
  FOR EACH ROW EXECUTE FUNCTION public.orders_publish();
