package salespulse.peer;

import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Joined;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.ReadOnlyWindowStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Five salespulse KPIs in Kafka Streams, for side-by-side measurement (issue 21).
 *
 * <pre>
 * java -jar kafka-streams-peer.jar --bootstrap HOST:PORT --topic TOPIC --expect N --out rows.json
 *      [--state-dir DIR] [--application-id ID] [--commit-interval-ms MS]
 * </pre>
 *
 * Reads the events topic from the earliest offset, stops once it has processed N records and
 * every record it made on its internal topics has been processed and committed, writes the final
 * rows (the stores' values, read by interactive queries) to --out, prints one JSON line of
 * timings, then deletes its consumer group, internal topics and local state.
 */
public final class KpiPeer {
  static final long HOUR_MS = Calls.HOUR_MS;
  static final Duration HORIZON = Duration.ofDays(35); // salespulse's lateness horizon
  static final String ACT_HOUR = "activities-hour";
  static final String ACT_DAY = "activities-day";
  static final String QUEUE_HOUR = "calls-queue-hour";

  private KpiPeer() {}

  /** The topology; {@code processed} counts every record read from the events topic. */
  static Topology topology(String topic, AtomicLong processed, AtomicLong firstAt, Properties props) {
    StreamsBuilder builder = new StreamsBuilder();
    Serde<String> text = Serdes.String();
    Serde<Event> eventSerde =
        Serdes.serdeFrom(
            (t, e) -> {
              throw new UnsupportedOperationException("events are never re-serialized");
            },
            new Event.Decoder());
    KStream<String, Event> events =
        builder.stream(
                topic,
                Consumed.with(text, eventSerde)
                    .withTimestampExtractor(new Event.OccurredAt())
                    .withName("events"))
            .peek(
                (k, e) -> {
                  if (processed.getAndIncrement() == 0) {
                    firstAt.set(System.currentTimeMillis());
                  }
                },
                Named.as("count-input"))
            .filter((k, e) -> e != null, Named.as("decodable"));

    // rep -> team, as a versioned table: a stream-table join then reads the team of the rep
    // at the activity's event time (the oracle's rule), not the latest one. Rep events are keyed
    // by rep_id on the topic (docs/events.md), so the table needs no repartition.
    KTable<String, String> repTeam =
        events
            .filter((k, e) -> "rep.upserted".equals(e.type) && e.teamId != null, Named.as("reps"))
            .mapValues(e -> e.teamId, Named.as("rep-team"))
            .toTable(
                Named.as("rep-team-table"),
                Materialized.<String, String>as(
                        Stores.persistentVersionedKeyValueStore("rep-team", HORIZON))
                    .withKeySerde(text)
                    .withValueSerde(text));

    activities(events, repTeam);
    calls(events);
    return builder.build(props);
  }

  /** Outbound calls, sent emails and held meetings, by rep, team and org, per UTC hour and day. */
  static void activities(KStream<String, Event> events, KTable<String, String> repTeam) {
    Serde<String> text = Serdes.String();
    KGroupedStream<String, byte[]> byScope =
        events
            .filter((k, e) -> e.isActivity(), Named.as("activities"))
            .map(
                (k, e) -> KeyValue.pair(e.repId == null ? "" : e.repId, e.atMs),
                Named.as("by-rep"))
            .leftJoin(
                repTeam,
                (rep, at, team) -> team == null ? "unassigned" : team,
                Joined.with(text, Serdes.Long(), text).withName("team-at-event-time"))
            .flatMap(
                (rep, team) -> {
                  List<KeyValue<String, byte[]>> out = new ArrayList<>(3);
                  byte[] one = new byte[0];
                  out.add(KeyValue.pair("org|", one));
                  out.add(KeyValue.pair("team|" + team, one));
                  if (!rep.isEmpty()) {
                    out.add(KeyValue.pair("rep|" + rep, one));
                  }
                  return out;
                },
                Named.as("credit"))
            .groupByKey(Grouped.with("by-scope", text, Serdes.ByteArray()));
    // Tumbling windows on event time, aligned to the epoch: UTC clock hours and days. The grace
    // is salespulse's lateness horizon, so no event of the log is dropped as late.
    byScope
        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofHours(1), HORIZON))
        .count(
            Named.as("count-hour"),
            Materialized.<String, Long, WindowStore<Bytes, byte[]>>as(ACT_HOUR)
                .withRetention(HORIZON.plusDays(2)));
    byScope
        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofDays(1), HORIZON))
        .count(
            Named.as("count-day"),
            Materialized.<String, Long, WindowStore<Bytes, byte[]>>as(ACT_DAY)
                .withRetention(HORIZON.plusDays(2)));
  }

  /**
   * Inbound calls per queue per UTC hour of their start: a KTable of calls (one row per call,
   * built from its events in any order), re-grouped by queue and hour; an update to a call takes
   * its old fact out of its queue-hour and adds the new one.
   */
  static void calls(KStream<String, Event> events) {
    Serde<String> text = Serdes.String();
    // Call events are keyed by call_id on the topic (docs/events.md): grouped without repartition.
    KTable<String, Calls.State> calls =
        events
            .filter((k, e) -> e.isCall() && e.callId != null, Named.as("call-events"))
            .groupByKey(Grouped.with("calls", text, Serdes.serdeFrom((t, e) -> null, new Event.Decoder())))
            .aggregate(
                Calls.State::new,
                (callId, e, state) -> state.apply(e),
                Named.as("call-state"),
                Materialized.<String, Calls.State, KeyValueStore<Bytes, byte[]>>as("calls")
                    .withKeySerde(text)
                    .withValueSerde(Calls.stateSerde()));
    calls
        .filter((callId, s) -> s.offered(), Named.as("offered"))
        .groupBy(
            (callId, s) -> KeyValue.pair(s.queueHour(), s.fact()),
            Grouped.with("by-queue-hour", text, Calls.factSerde()))
        .aggregate(
            () -> Calls.Tally.ZERO,
            (key, fact, tally) -> tally.plus(fact, 1),
            (key, fact, tally) -> tally.plus(fact, -1),
            Named.as("queue-hour"),
            Materialized.<String, Calls.Tally, KeyValueStore<Bytes, byte[]>>as(QUEUE_HOUR)
                .withKeySerde(text)
                .withValueSerde(Calls.tallySerde()));
  }

  static Properties config(Map<String, String> args, String appId) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("--bootstrap"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, args.getOrDefault("--state-dir", "/tmp/kafka-streams-peer"));
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // at_least_once (the default) commits every commit.interval.ms (default 30 s); each commit
    // flushes the record caches (statestore.cache.max.bytes, default 10 MiB, kept) downstream.
    // 1 s here: the end of a run waits for two commits (source, then repartition topics).
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, args.getOrDefault("--commit-interval-ms", "1000"));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("--threads", "1"));
    p.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);
    // A static member: close(leaveGroup) removes it from the group at once, so the group of
    // this run can be deleted as soon as it stops.
    p.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), appId + "-member");
    return p;
  }

  public static void main(String[] argv) throws Exception {
    // Kafka's INFO lines (hundreds per run) cost CPU that is not the peer's work: WARN and up.
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
    Map<String, String> args = parseArgs(argv);
    for (String required : List.of("--bootstrap", "--topic", "--expect", "--out")) {
      if (!args.containsKey(required)) {
        System.err.println("missing " + required);
        System.exit(2);
      }
    }
    long expect = Long.parseLong(args.get("--expect"));
    String topic = args.get("--topic");
    String appId = args.getOrDefault("--application-id", "salespulse-ks-peer-" + UUID.randomUUID().toString().substring(0, 8));
    Properties props = config(args, appId);
    AtomicLong processed = new AtomicLong();
    AtomicLong firstAt = new AtomicLong();
    long started = System.currentTimeMillis();
    Topology topology = topology(topic, processed, firstAt, props);
    if (args.containsKey("--describe")) {
      System.err.println(topology.describe());
    }
    KafkaStreams streams = new KafkaStreams(topology, props);
    streams.setUncaughtExceptionHandler(
        ex -> {
          ex.printStackTrace();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    Properties adminProps = new Properties();
    adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("--bootstrap"));
    long timeoutMs = Long.parseLong(args.getOrDefault("--timeout-s", "1800")) * 1000;
    try (Admin admin = Admin.create(adminProps)) {
      streams.start();
      long deadline = System.currentTimeMillis() + timeoutMs;
      while (processed.get() < expect) {
        check(streams, deadline, "processed " + processed.get() + " of " + expect);
        Thread.sleep(20);
      }
      long caughtUp = System.currentTimeMillis();
      while (!drained(admin, appId, topic)) {
        check(streams, deadline, "internal topics not drained");
        Thread.sleep(100);
      }
      long drained = System.currentTimeMillis();
      int rows = writeRows(streams, Path.of(args.get("--out")));
      System.out.printf(
          "{\"processed\": %d, \"rows\": %d, \"application_id\": \"%s\", \"jvm_started_ms\": %d, "
              + "\"first_record_ms\": %d, \"caught_up_ms\": %d, \"drained_ms\": %d}%n",
          processed.get(), rows, appId, started, firstAt.get(), caughtUp, drained);
      System.out.flush();
      // Leave the group at once (else its member stays until the session times out and the
      // group cannot be deleted).
      streams.close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(30)));
      streams.cleanUp();
      if (!args.containsKey("--keep")) {
        try {
          forget(admin, appId);
        } catch (Exception ex) {
          System.err.println("could not delete the group or internal topics of " + appId + ": " + ex);
        }
      }
    } finally {
      streams.close(Duration.ofSeconds(30));
    }
  }

  private static void check(KafkaStreams streams, long deadline, String what) {
    KafkaStreams.State state = streams.state();
    if (state == KafkaStreams.State.ERROR
        || state == KafkaStreams.State.PENDING_ERROR
        || state == KafkaStreams.State.NOT_RUNNING) {
      throw new IllegalStateException("Kafka Streams stopped (" + state + "): " + what);
    }
    if (System.currentTimeMillis() > deadline) {
      throw new IllegalStateException("timed out: " + what);
    }
  }

  /**
   * Every partition the application reads (the events topic and its repartition topics) has its
   * committed offset at its end, and the ends did not move while we looked. A commit flushes the
   * caches and the producer first, so nothing is left in flight.
   */
  static boolean drained(Admin admin, String appId, String topic) throws Exception {
    Set<String> inputs = new HashSet<>();
    inputs.add(topic);
    for (String name : admin.listTopics().names().get(10, TimeUnit.SECONDS)) {
      if (name.startsWith(appId + "-") && name.endsWith("-repartition")) {
        inputs.add(name);
      }
    }
    Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
    for (TopicDescription d : admin.describeTopics(inputs).allTopicNames().get(10, TimeUnit.SECONDS).values()) {
      d.partitions().forEach(p -> latest.put(new TopicPartition(d.name(), p.partition()), OffsetSpec.latest()));
    }
    Map<TopicPartition, Long> before = ends(admin, latest);
    Map<TopicPartition, OffsetAndMetadata> committed =
        admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
    Map<TopicPartition, Long> after = ends(admin, latest);
    for (Map.Entry<TopicPartition, Long> end : after.entrySet()) {
      OffsetAndMetadata c = committed.get(end.getKey());
      long at = c == null ? 0 : c.offset();
      if (at != end.getValue() || !end.getValue().equals(before.get(end.getKey()))) {
        return false;
      }
    }
    return true;
  }

  private static Map<TopicPartition, Long> ends(Admin admin, Map<TopicPartition, OffsetSpec> specs) throws Exception {
    Map<TopicPartition, Long> out = new HashMap<>();
    admin.listOffsets(specs).all().get(10, TimeUnit.SECONDS).forEach((tp, info) -> out.put(tp, info.offset()));
    return out;
  }

  /** The internal topics and consumer group of this run, deleted. */
  private static void forget(Admin admin, String appId) throws Exception {
    List<String> internal = new ArrayList<>();
    for (String name : admin.listTopics().names().get(10, TimeUnit.SECONDS)) {
      if (name.startsWith(appId + "-")) {
        internal.add(name);
      }
    }
    admin.deleteTopics(internal).all().get(30, TimeUnit.SECONDS);
    // The group empties once the closed member has left; with the classic protocol that can
    // take a moment after close.
    for (int attempt = 0; ; attempt++) {
      try {
        admin.deleteConsumerGroups(List.of(appId)).all().get(10, TimeUnit.SECONDS);
        return;
      } catch (java.util.concurrent.ExecutionException ex) {
        if (attempt >= 20) {
          throw ex;
        }
        Thread.sleep(250);
      }
    }
  }

  /** The final rows, read from the stores by interactive queries; how many were written. */
  static int writeRows(KafkaStreams streams, Path out) throws IOException {
    int rows = 0;
    try (Writer w = Files.newBufferedWriter(out, StandardCharsets.UTF_8)) {
      w.write("[");
      for (String[] store : new String[][] {{ACT_HOUR, "hour"}, {ACT_DAY, "day"}}) {
        ReadOnlyWindowStore<String, Long> counts =
            streams.store(StoreQueryParameters.fromNameAndType(store[0], QueryableStoreTypes.windowStore()));
        try (KeyValueIterator<Windowed<String>, Long> it = counts.all()) {
          while (it.hasNext()) {
            KeyValue<Windowed<String>, Long> kv = it.next();
            String[] scope = kv.key.key().split("\\|", 2);
            rows += row(w, rows, "activities", scope[0], scope[1], store[1], kv.key.window().start(), kv.value, -1);
          }
        }
      }
      ReadOnlyKeyValueStore<String, Calls.Tally> queues =
          streams.store(StoreQueryParameters.fromNameAndType(QUEUE_HOUR, QueryableStoreTypes.keyValueStore()));
      try (KeyValueIterator<String, Calls.Tally> it = queues.all()) {
        while (it.hasNext()) {
          KeyValue<String, Calls.Tally> kv = it.next();
          Calls.Tally t = kv.value;
          if (t == null || t.offered() == 0) {
            continue; // every call it had moved to another queue-hour
          }
          int bar = kv.key.lastIndexOf('|');
          String queue = kv.key.substring(0, bar);
          long start = Long.parseLong(kv.key.substring(bar + 1));
          rows += row(w, rows, "calls_offered", "queue", queue, "hour", start, t.offered(), -1);
          rows += row(w, rows, "calls_answered", "queue", queue, "hour", start, t.answered(), -1);
          rows += row(w, rows, "calls_abandoned", "queue", queue, "hour", start, t.abandoned(), -1);
          rows += row(w, rows, "asa", "queue", queue, "hour", start, t.waitMs(), t.answered());
        }
      }
      w.write("\n]\n");
    }
    return rows;
  }

  private static int row(Writer w, int before, String kpi, String scope, String id, String period,
      long startMs, long value, long n) throws IOException {
    StringBuilder b = new StringBuilder(160);
    b.append(before == 0 ? "\n" : ",\n");
    b.append("{\"kpi\": \"").append(kpi).append("\", \"scope\": \"").append(scope);
    b.append("\", \"id\": ");
    quote(b, id);
    b.append(", \"period\": \"").append(period).append("\", \"start_ms\": ").append(startMs);
    b.append(", \"value\": ").append(value);
    if (n >= 0) {
      b.append(", \"n\": ").append(n);
    }
    b.append('}');
    w.write(b.toString());
    return 1;
  }

  private static void quote(StringBuilder b, String s) {
    b.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') {
        b.append('\\').append(c);
      } else if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x2028 || c == 0x2029) {
        b.append(String.format("\\u%04x", (int) c));
      } else {
        b.append(c);
      }
    }
    b.append('"');
  }

  static Map<String, String> parseArgs(String[] argv) {
    Map<String, String> out = new HashMap<>();
    for (int i = 0; i < argv.length; i++) {
      String a = argv[i];
      boolean flag = a.equals("--describe") || a.equals("--keep");
      if (flag) {
        out.put(a, "");
      } else if (i + 1 < argv.length) {
        out.put(a, argv[++i]);
      } else {
        throw new IllegalArgumentException(a + " needs a value");
      }
    }
    return out;
  }
}
