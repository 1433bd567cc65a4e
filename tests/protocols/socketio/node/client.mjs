// One @insforge/sdk client, driven by pytest: JSON commands on stdin, JSON lines on stdout.
// {"op":"connect","baseUrl":...,"accessToken"?|"anonKey"?|"apiKey"?}  -> {"op":"connected"} or {"op":"connect_error","message"}
// {"op":"listen","event":"chat"}                                     -> {"op":"event","event","data"} per arrival
// {"op":"subscribe","channel":"room"}                                -> {"op":"subscribed","response"}
// {"op":"publish","channel","event","payload"}                       -> {"op":"published"}
// {"op":"unsubscribe","channel"}                                     -> {"op":"unsubscribed"}
// {"op":"presence","channel"}                                        -> {"op":"presence","members"}
// {"op":"presence_set","channel","state"}                            -> {"op":"presence_set","response"}
//   (the SDK has no call for it: pgrealtime's realtime:presence event on the SDK's socket)
// {"op":"disconnect"}                                                -> {"op":"disconnected"}, then exits
import { createClient, createAdminClient } from "@insforge/sdk";
import readline from "node:readline";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let client = null;

async function handle(cmd) {
  const rt = client?.realtime;
  switch (cmd.op) {
    case "connect": {
      const config = { baseUrl: cmd.baseUrl };
      if (cmd.anonKey) config.anonKey = cmd.anonKey;
      if (cmd.accessToken) config.accessToken = cmd.accessToken;
      client = cmd.apiKey ? createAdminClient({ ...config, apiKey: cmd.apiKey }) : createClient(config);
      client.realtime.on("error", (error) => out({ op: "error", error }));
      try {
        await client.realtime.connect();
        out({ op: "connected", socketId: client.realtime.socketId });
      } catch (error) {
        out({ op: "connect_error", message: error.message, data: error.data ?? null });
      }
      break;
    }
    case "listen":
      rt.on(cmd.event, (data) => out({ op: "event", event: cmd.event, data }));
      break;
    case "subscribe":
      out({ op: "subscribed", response: await rt.subscribe(cmd.channel) });
      break;
    case "publish":
      await rt.publish(cmd.channel, cmd.event, cmd.payload);
      out({ op: "published" });
      break;
    case "unsubscribe":
      rt.unsubscribe(cmd.channel);
      out({ op: "unsubscribed" });
      break;
    case "presence":
      out({ op: "presence", members: rt.getPresenceState(cmd.channel) });
      break;
    case "presence_set": {
      const response = await new Promise((resolve) =>
        rt.socket.emit("realtime:presence", { channel: cmd.channel, state: cmd.state }, resolve));
      out({ op: "presence_set", response });
      break;
    }
    case "disconnect":
      rt?.disconnect();
      out({ op: "disconnected" });
      process.exit(0);
  }
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  queue = queue.then(() => handle(cmd)).catch((error) => out({ op: "failed", message: String(error) }));
});
lines.on("close", () => queue.then(() => process.exit(0)));
