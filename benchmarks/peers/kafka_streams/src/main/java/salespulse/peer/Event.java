package salespulse.peer;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.time.OffsetDateTime;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * The fields of a salespulse event that the five KPIs read; the rest is skipped unread.
 *
 * <p>Decoded with Jackson's streaming parser (jackson-core): one pass over the bytes, no tree and
 * no data binding, which is the cheapest way Jackson reads JSON.
 */
final class Event {
  String type;
  String eventId;
  long atMs;
  String repId;
  String teamId;
  String callId;
  String direction;
  String queueId;

  boolean isActivity() {
    return switch (type) {
      case "email.sent", "meeting.held" -> true;
      case "call.started" -> "outbound".equals(direction);
      default -> false;
    };
  }

  boolean isCall() {
    return type.startsWith("call.");
  }

  private static final JsonFactory JSON = new JsonFactory();

  /** The event in {@code bytes}, or null when they are not an object with a type and a time. */
  static Event parse(byte[] bytes) {
    if (bytes == null) {
      return null;
    }
    Event e = new Event();
    String at = null;
    try (JsonParser p = JSON.createParser(bytes)) {
      if (p.nextToken() != JsonToken.START_OBJECT) {
        return null;
      }
      while (p.nextToken() == JsonToken.FIELD_NAME) {
        String name = p.currentName();
        JsonToken value = p.nextToken();
        if (value == JsonToken.START_OBJECT || value == JsonToken.START_ARRAY) {
          p.skipChildren();
          continue;
        }
        if (value != JsonToken.VALUE_STRING) {
          continue; // numbers, booleans and nulls: no field read here is one
        }
        switch (name) {
          case "type" -> e.type = p.getText();
          case "event_id" -> e.eventId = p.getText();
          case "occurred_at" -> at = p.getText();
          case "rep_id" -> e.repId = p.getText();
          case "team_id" -> e.teamId = p.getText();
          case "call_id" -> e.callId = p.getText();
          case "direction" -> e.direction = p.getText();
          case "queue_id" -> e.queueId = p.getText();
          default -> {}
        }
      }
    } catch (IOException | RuntimeException ex) {
      return null;
    }
    if (e.type == null || at == null) {
      return null;
    }
    try {
      e.atMs = epochMs(at);
    } catch (RuntimeException ex) {
      return null;
    }
    return e;
  }

  /**
   * Milliseconds since the epoch of an RFC 3339 instant, truncated to the millisecond (as the
   * oracle's epoch_ms). The common shape, "2026-05-19T19:25:15.058Z" or with a "+hh:mm" offset,
   * is read by hand; anything else by java.time.
   */
  static long epochMs(String s) {
    int n = s.length();
    if (n >= 20 && s.charAt(4) == '-' && s.charAt(7) == '-' && s.charAt(13) == ':') {
      long fast = fastEpochMs(s, n);
      if (fast != Long.MIN_VALUE) {
        return fast;
      }
    }
    return OffsetDateTime.parse(s.toUpperCase()).toInstant().toEpochMilli();
  }

  private static long fastEpochMs(String s, int n) {
    char t = s.charAt(10);
    if ((t != 'T' && t != 't') || s.charAt(16) != ':') {
      return Long.MIN_VALUE;
    }
    int year = digits(s, 0, 4);
    int month = digits(s, 5, 2);
    int day = digits(s, 8, 2);
    int hour = digits(s, 11, 2);
    int minute = digits(s, 14, 2);
    int second = digits(s, 17, 2);
    if ((year | month | day | hour | minute | second) < 0) {
      return Long.MIN_VALUE;
    }
    int i = 19;
    int millis = 0;
    if (i < n && s.charAt(i) == '.') {
      int scale = 100;
      i++;
      while (i < n && Character.isDigit(s.charAt(i))) {
        millis += (s.charAt(i) - '0') * scale;
        scale /= 10;
        i++;
      }
    }
    long offsetMs;
    if (i == n - 1 && (s.charAt(i) == 'Z' || s.charAt(i) == 'z')) {
      offsetMs = 0;
    } else if (i == n - 6 && (s.charAt(i) == '+' || s.charAt(i) == '-') && s.charAt(i + 3) == ':') {
      int oh = digits(s, i + 1, 2);
      int om = digits(s, i + 4, 2);
      if ((oh | om) < 0) {
        return Long.MIN_VALUE;
      }
      offsetMs = (oh * 60L + om) * 60_000L * (s.charAt(i) == '-' ? -1 : 1);
    } else {
      return Long.MIN_VALUE;
    }
    long days = daysFromCivil(year, month, day);
    return ((days * 24 + hour) * 60 + minute) * 60_000L + second * 1000L + millis - offsetMs;
  }

  private static int digits(String s, int from, int count) {
    int v = 0;
    for (int i = from; i < from + count; i++) {
      char c = s.charAt(i);
      if (c < '0' || c > '9') {
        return -1;
      }
      v = v * 10 + (c - '0');
    }
    return v;
  }

  /** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
  private static long daysFromCivil(int y, int m, int d) {
    y -= m <= 2 ? 1 : 0;
    long era = Math.floorDiv(y, 400);
    long yoe = y - era * 400;
    long doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
  }

  /** Decodes a record's value; an undecodable one becomes null and is filtered out. */
  static final class Decoder implements Deserializer<Event> {
    @Override
    public Event deserialize(String topic, byte[] data) {
      return parse(data);
    }
  }

  /** Event time: the record's timestamp is its event's occurred_at (windows, versioned join). */
  static final class OccurredAt implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      return record.value() instanceof Event e ? e.atMs : Math.max(partitionTime, 0);
    }
  }
}
