package salespulse.peer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/** The call KPIs' values: one call's state, its fact for its queue-hour, a queue-hour's tally. */
final class Calls {
  private Calls() {}

  static final long HOUR_MS = 3_600_000L;
  static final long NONE = Long.MIN_VALUE;

  /**
   * What a call's events say so far, in any order: its latest start (by occurred_at, then
   * event_id) with that start's direction and queue, its first answer, and whether it ended.
   */
  static final class State {
    long startedAt = NONE;
    String startEventId = "";
    boolean inbound;
    String queue; // of the latest start; null when it names none
    long answeredAt = NONE; // the first answer
    boolean ended;

    /**
     * The state after {@code e}, as a new object: Kafka Streams forwards the old and the new
     * aggregate downstream (the queue totals subtract the old), so the old must not change.
     */
    State apply(Event e) {
      State next = copy();
      next.change(e);
      return next;
    }

    private State copy() {
      State s = new State();
      s.startedAt = startedAt;
      s.startEventId = startEventId;
      s.inbound = inbound;
      s.queue = queue;
      s.answeredAt = answeredAt;
      s.ended = ended;
      return s;
    }

    private void change(Event e) {
      switch (e.type) {
        case "call.started" -> {
          String id = e.eventId == null ? "" : e.eventId;
          if (startedAt == NONE
              || e.atMs > startedAt
              || (e.atMs == startedAt && id.compareTo(startEventId) > 0)) {
            startedAt = e.atMs;
            startEventId = id;
            inbound = "inbound".equals(e.direction);
            queue = e.queueId;
          }
        }
        case "call.answered" -> {
          if (answeredAt == NONE || e.atMs < answeredAt) {
            answeredAt = e.atMs;
          }
        }
        case "call.ended" -> ended = true;
        default -> {}
      }
    }

    /** An inbound call started with a queue: one the queue was offered. */
    boolean offered() {
      return startedAt != NONE && inbound && queue != null;
    }

    String queueHour() {
      return queue + "|" + Math.floorDiv(startedAt, HOUR_MS) * HOUR_MS;
    }

    Fact fact() {
      boolean answered = answeredAt != NONE;
      return new Fact(answered, ended && !answered, answered ? Math.max(0, answeredAt - startedAt) : 0);
    }
  }

  /** One offered call's contribution to its queue-hour. */
  record Fact(boolean answered, boolean abandoned, long waitMs) {}

  /** A queue-hour: calls offered, answered, abandoned, and the answered calls' summed waits. */
  record Tally(long offered, long answered, long abandoned, long waitMs) {
    static final Tally ZERO = new Tally(0, 0, 0, 0);

    Tally plus(Fact f, int sign) {
      return new Tally(
          offered + sign,
          answered + (f.answered() ? sign : 0),
          abandoned + (f.abandoned() ? sign : 0),
          waitMs + sign * f.waitMs());
    }
  }

  static Serde<State> stateSerde() {
    Serializer<State> out =
        (topic, s) -> {
          if (s == null) {
            return null;
          }
          byte[] id = s.startEventId.getBytes(StandardCharsets.UTF_8);
          byte[] queue = s.queue == null ? null : s.queue.getBytes(StandardCharsets.UTF_8);
          ByteBuffer b = ByteBuffer.allocate(8 + 8 + 1 + 4 + id.length + 4 + (queue == null ? 0 : queue.length));
          b.putLong(s.startedAt).putLong(s.answeredAt);
          b.put((byte) ((s.inbound ? 1 : 0) | (s.ended ? 2 : 0)));
          b.putInt(id.length).put(id);
          b.putInt(queue == null ? -1 : queue.length);
          if (queue != null) {
            b.put(queue);
          }
          return b.array();
        };
    Deserializer<State> in =
        (topic, data) -> {
          if (data == null) {
            return null;
          }
          ByteBuffer b = ByteBuffer.wrap(data);
          State s = new State();
          s.startedAt = b.getLong();
          s.answeredAt = b.getLong();
          byte flags = b.get();
          s.inbound = (flags & 1) != 0;
          s.ended = (flags & 2) != 0;
          s.startEventId = text(b, b.getInt());
          int q = b.getInt();
          s.queue = q < 0 ? null : text(b, q);
          return s;
        };
    return Serdes.serdeFrom(out, in);
  }

  private static String text(ByteBuffer b, int length) {
    String s = new String(b.array(), b.position(), length, StandardCharsets.UTF_8);
    b.position(b.position() + length);
    return s;
  }

  static Serde<Fact> factSerde() {
    Serializer<Fact> out =
        (topic, f) ->
            f == null
                ? null
                : ByteBuffer.allocate(9)
                .put((byte) ((f.answered() ? 1 : 0) | (f.abandoned() ? 2 : 0)))
                .putLong(f.waitMs())
                .array();
    Deserializer<Fact> in =
        (topic, data) -> {
          if (data == null) {
            return null;
          }
          ByteBuffer b = ByteBuffer.wrap(data);
          byte flags = b.get();
          return new Fact((flags & 1) != 0, (flags & 2) != 0, b.getLong());
        };
    return Serdes.serdeFrom(out, in);
  }

  static Serde<Tally> tallySerde() {
    Serializer<Tally> out =
        (topic, t) ->
            t == null
                ? null
                : ByteBuffer.allocate(32)
                .putLong(t.offered())
                .putLong(t.answered())
                .putLong(t.abandoned())
                .putLong(t.waitMs())
                .array();
    Deserializer<Tally> in =
        (topic, data) -> {
          if (data == null) {
            return null;
          }
          ByteBuffer b = ByteBuffer.wrap(data);
          return new Tally(b.getLong(), b.getLong(), b.getLong(), b.getLong());
        };
    return Serdes.serdeFrom(out, in);
  }
}
