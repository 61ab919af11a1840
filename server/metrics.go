package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// metrics are one Server's Prometheus metrics. Each Server has its own set,
// registered nowhere: Server.Collector hands them to the caller's registry
// (the daemon's), so two servers in one process never clash.
//
// Hot paths count with counters resolved to their label values here, once:
// counting is one atomic add, with no label lookup, no allocation and no
// lock. Gauges (sessions, online uids, watchers) are not updated per event
// at all: Collect reads them from the registry and presence state at scrape
// time.
type metrics struct {
	srv *Server

	framesIn  frameCounters // client frames, by ConnectRequest.frame field
	framesOut frameCounters // server frames sent, by ConnectResponse.frame field
	// The kinds sent and received most often, counted without reflection.
	pingsIn, pongsOut, pushesOut prometheus.Counter

	pushesUid, pushesBroadcast         prometheus.Counter // pushes accepted
	deliveriesUid, deliveriesBroadcast prometheus.Counter // sessions a push was queued to
	fanout                             prometheus.Histogram

	sessionOverflows, watcherOverflows prometheus.Counter

	ended          [len(reasonNames)]prometheus.Counter // identified sessions, by Reason
	identifyFailed [len(reasonNames)]prometheus.Counter // streams that never became a session, by Reason
	authIdentify   prometheus.Counter                   // tokens refused at Identify
	authRefresh    prometheus.Counter                   // tokens refused by RefreshToken
	authAPIKey     prometheus.Counter                   // backend calls refused for their API key

	vecs                              []prometheus.Collector
	sessionsDesc, uidsDesc, watchDesc *prometheus.Desc
	histBytesDesc, histMaxDesc        *prometheus.Desc
	storedExpiredDesc                 *prometheus.Desc
}

var _ prometheus.Collector = (*metrics)(nil)

// FanoutBuckets are the bounds of presence_broadcast_fanout_seconds: 0.5 ms
// to about 8 s, doubling.
var FanoutBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15)

func newMetrics(srv *Server) *metrics {
	m := &metrics{srv: srv}
	framesIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_frames_received_total",
		Help: "Client frames received on Connect streams, by kind (the ConnectRequest.frame field; unknown: none this server knows).",
	}, []string{"kind"})
	framesOut := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_frames_sent_total",
		Help: "Server frames written to Connect streams, by kind (the ConnectResponse.frame field).",
	}, []string{"kind"})
	m.framesIn = newFrameCounters(framesIn, (&presencev1.ConnectRequest{}).ProtoReflect().Descriptor())
	m.framesOut = newFrameCounters(framesOut, (&presencev1.ConnectResponse{}).ProtoReflect().Descriptor())
	m.pingsIn = framesIn.WithLabelValues("ping")
	m.pongsOut, m.pushesOut = framesOut.WithLabelValues("pong"), framesOut.WithLabelValues("push")

	pushes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_pushes_total",
		Help: "Pushes queued live, by scope: one per uid of SendToUid/SendToUids that had a session (not pushes only stored), one per Broadcast.",
	}, []string{"scope"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_push_deliveries_total",
		Help: "Pushes queued to a session, by scope: one per session a push reached (the delivered count of SendToUid and Broadcast).",
	}, []string{"scope"})
	m.pushesUid, m.pushesBroadcast = pushes.WithLabelValues("uid"), pushes.WithLabelValues("broadcast")
	m.deliveriesUid, m.deliveriesBroadcast = deliveries.WithLabelValues("uid"), deliveries.WithLabelValues("broadcast")
	m.fanout = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "presence_broadcast_fanout_seconds",
		Help:    "Time a Broadcast takes to number its push and queue it to every session (not the time to write it to the clients).",
		Buckets: FanoutBuckets,
	})

	overflows := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_queue_overflows_total",
		Help: "Outbound queues that overflowed, by queue: a session's (it ends as a slow consumer) or a presence watcher's (the watch ends).",
	}, []string{"queue"})
	m.sessionOverflows, m.watcherOverflows = overflows.WithLabelValues("session"), overflows.WithLabelValues("watcher")

	ended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_sessions_ended_total",
		Help: "Identified sessions that ended, by reason.",
	}, []string{"reason"})
	failed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_identify_failures_total",
		Help: "Connect streams that ended before becoming a session (no, late or invalid Identify, a refused token, a limit, shutdown), by reason.",
	}, []string{"reason"})
	for r := range reasonNames {
		m.ended[r] = ended.WithLabelValues(Reason(r).String())
		m.identifyFailed[r] = failed.WithLabelValues(Reason(r).String())
	}
	auth := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_auth_failures_total",
		Help: "Credentials refused, by stage: identify or refresh (client tokens: bad, expired, or for another uid), api_key (backend calls without a valid key).",
	}, []string{"stage"})
	m.authIdentify, m.authRefresh = auth.WithLabelValues("identify"), auth.WithLabelValues("refresh")
	m.authAPIKey = auth.WithLabelValues("api_key")

	m.vecs = []prometheus.Collector{framesIn, framesOut, pushes, deliveries, m.fanout, overflows, ended, failed, auth}
	m.sessionsDesc = prometheus.NewDesc("presence_sessions", "Identified sessions now live.", nil, nil)
	m.uidsDesc = prometheus.NewDesc("presence_online_uids", "Uids with at least one live session.", nil, nil)
	m.watchDesc = prometheus.NewDesc("presence_watchers", "Open WatchPresence streams.", nil, nil)
	m.histBytesDesc = prometheus.NewDesc("presence_history_bytes", "Memory held by every push history together (kept for resume, and stored pushes), as counted against --history-max-bytes.", nil, nil)
	m.histMaxDesc = prometheus.NewDesc("presence_history_max_bytes", "The bound on presence_history_bytes (--history-max-bytes).", nil, nil)
	m.storedExpiredDesc = prometheus.NewDesc("presence_stored_pushes_expired_total", "Stored pushes (store_for) dropped undelivered when their time ran out.", nil, nil)
	return m
}

// Collector returns the server's metrics (names prefixed presence_) as one
// collector, for the caller to register on its own registry.
func (srv *Server) Collector() prometheus.Collector { return srv.metrics }

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.vecs {
		c.Describe(ch)
	}
	ch <- m.sessionsDesc
	ch <- m.uidsDesc
	ch <- m.watchDesc
	ch <- m.histBytesDesc
	ch <- m.histMaxDesc
	ch <- m.storedExpiredDesc
}

// Collect implements prometheus.Collector. The gauges, and the counter the
// server already keeps for expired stored pushes, are read here, at scrape
// time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.vecs {
		c.Collect(ch)
	}
	uids, sessions := m.srv.reg.counts()
	ch <- prometheus.MustNewConstMetric(m.sessionsDesc, prometheus.GaugeValue, float64(sessions))
	ch <- prometheus.MustNewConstMetric(m.uidsDesc, prometheus.GaugeValue, float64(uids))
	ch <- prometheus.MustNewConstMetric(m.watchDesc, prometheus.GaugeValue, float64(m.srv.pres.watcherCount()))
	b := m.srv.hist.budget
	ch <- prometheus.MustNewConstMetric(m.histBytesDesc, prometheus.GaugeValue, float64(b.used.Load()))
	ch <- prometheus.MustNewConstMetric(m.histMaxDesc, prometheus.GaugeValue, float64(b.max))
	ch <- prometheus.MustNewConstMetric(m.storedExpiredDesc, prometheus.CounterValue, float64(m.srv.storedExpired.Load()))
}

// frameCounters counts frames by which field of their frame oneof is set.
// New frame kinds in the contract get their own label without a change
// here.
type frameCounters struct {
	oneof   protoreflect.OneofDescriptor
	byField []prometheus.Counter // by the field's index in its message
	unknown prometheus.Counter   // no field this server knows is set
}

func newFrameCounters(vec *prometheus.CounterVec, md protoreflect.MessageDescriptor) frameCounters {
	fc := frameCounters{
		oneof:   md.Oneofs().ByName("frame"),
		byField: make([]prometheus.Counter, md.Fields().Len()),
		unknown: vec.WithLabelValues("unknown"),
	}
	fields := fc.oneof.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		fc.byField[fd.Index()] = vec.WithLabelValues(string(fd.Name()))
	}
	return fc
}

func (fc *frameCounters) inc(m protoreflect.Message) {
	if fd := m.WhichOneof(fc.oneof); fd != nil {
		fc.byField[fd.Index()].Inc()
		return
	}
	fc.unknown.Inc()
}

// frameIn counts a client frame: Pings with a type switch (a few ns),
// the rare kinds through reflection (≈50 ns), which also names kinds added
// to the contract later.
func (m *metrics) frameIn(req *presencev1.ConnectRequest) {
	if _, ok := req.GetFrame().(*presencev1.ConnectRequest_Ping); ok {
		m.pingsIn.Inc()
		return
	}
	m.framesIn.inc(req.ProtoReflect())
}

// frameOut counts a server frame, as frameIn does; the session calls it
// for each frame its transport took (Send, SendBatch, TrySend).
func (m *metrics) frameOut(msg *presencev1.ConnectResponse) {
	switch msg.GetFrame().(type) {
	case *presencev1.ConnectResponse_Push:
		m.pushesOut.Inc()
	case *presencev1.ConnectResponse_Pong:
		m.pongsOut.Inc()
	default:
		m.framesOut.inc(msg.ProtoReflect())
	}
}

// pushed counts a push accepted with its scope and the sessions it was
// queued to.
func (m *metrics) pushed(scope presencev1.PushScope, delivered uint32) {
	if scope == presencev1.PushScope_PUSH_SCOPE_BROADCAST {
		m.pushesBroadcast.Inc()
		m.deliveriesBroadcast.Add(float64(delivered))
		return
	}
	m.pushesUid.Inc()
	m.deliveriesUid.Add(float64(delivered))
}

// broadcastDone records a broadcast that started at start.
func (m *metrics) broadcastDone(start time.Time, delivered uint32) {
	m.fanout.Observe(time.Since(start).Seconds())
	m.pushed(presencev1.PushScope_PUSH_SCOPE_BROADCAST, delivered)
}

// streamEnded counts a Connect stream's end: a session's when identified,
// else a failure to become one; and refused tokens.
func (m *metrics) streamEnded(identified bool, r Reason) {
	i := int(r)
	if i < 0 || i >= len(reasonNames) {
		i = int(ReasonUnknown)
	}
	if identified {
		m.ended[i].Inc()
	} else {
		m.identifyFailed[i].Inc()
	}
	if r == ReasonUnauthenticated || r == ReasonPermissionDenied {
		if identified {
			m.authRefresh.Inc()
		} else {
			m.authIdentify.Inc()
		}
	}
}

// CountAPIKeyFailure counts a backend call refused for its API key; the
// daemon's interceptor calls it, since the key is checked before the
// server sees the call.
func (srv *Server) CountAPIKeyFailure() { srv.metrics.authAPIKey.Inc() }
