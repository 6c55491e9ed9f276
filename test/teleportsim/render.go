package teleportsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	apievents "github.com/gravitational/teleport/api/types/events"
)

// Event codes, as Teleport's lib/events/codes.go assigns them.
const (
	codeUserLogin        = "T1000I"
	codeUserLoginFailure = "T1000W"
	codeSessionStart     = "T2000I"
	codeResize           = "T2002I"
	codeSessionLeave     = "T2003I"
	codeSessionEnd       = "T2004I"
	codeSessionUpload    = "T2005I"
	codeKubeRequest      = "T3009I"
	codeAccessRequest    = "T5000I"
	codeRoleCreated      = "T9000I"
	codeDatabaseQuery    = "TDB02I"
)

const (
	// sessionUploadIndex is the ei of session.upload events (Teleport's
	// events.SessionUploadIndex).
	sessionUploadIndex = math.MaxInt32
	// hugeEventBytes is the size of the large field of an event over 1 MB.
	hugeEventBytes         = 1_100_000
	loginFailureMessage    = "invalid username, password or second factor"
	sessionRecordingMode   = "node"
	defaultServerNamespace = "default"
	servers                = 16
)

var (
	users     = []string{"alice", "bob", "carol", "dave", "erin", "frank", "mallory", "svc-ci"}
	logins    = []string{"root", "ubuntu", "ec2-user", "admin"}
	verbs     = []string{"get", "list", "watch", "create", "delete", "patch"}
	kubeKinds = []string{"pods", "deployments", "secrets", "configmaps", "services"}
	tables    = []string{"accounts", "orders", "payments", "sessions", "audit"}
	roles     = []string{"db-admin", "k8s-edit", "prod-ssh", "auditor"}
)

// renderer turns compact records into Teleport's structured events.
type renderer struct {
	seed    uint64
	cluster string
}

func (st *store) renderer() renderer { return renderer{seed: st.seed, cluster: st.cluster} }

func (rd renderer) meta(t int64, typ, code, uid string, index int64) apievents.Metadata {
	return apievents.Metadata{
		Index:       index,
		Type:        typ,
		ID:          uid,
		Code:        code,
		Time:        time.UnixMilli(t).UTC(),
		ClusterName: rd.cluster,
	}
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func (rd renderer) server(r *rand.Rand) apievents.ServerMetadata {
	n := r.IntN(servers)
	return apievents.ServerMetadata{
		ServerNamespace: defaultServerNamespace,
		ServerID:        uuidFrom(newRand(rd.seed, 0x5e7, uint64(n))),
		ServerHostname:  fmt.Sprintf("node-%02d", n),
		ServerAddr:      fmt.Sprintf("10.0.1.%d:3022", 10+n),
		ServerVersion:   CurrentVersion,
	}
}

func remoteAddr(r *rand.Rand) string {
	return fmt.Sprintf("192.0.2.%d:%d", 1+r.IntN(250), 30000+r.IntN(30000))
}

// audit renders an audit record that is not part of a session.
func (rd renderer) audit(id uint32, rec record, uid string) apievents.AuditEvent {
	r := newRand(rd.seed, 0xa0d, uint64(id))
	user := apievents.UserMetadata{User: pick(r, users)}
	typ := kindTypes[rec.kind]
	switch rec.kind {
	case kindLoginOK, kindLoginFail:
		ev := &apievents.UserLogin{
			Metadata:           rd.meta(rec.t, typ, codeUserLogin, uid, 0),
			UserMetadata:       user,
			Status:             apievents.Status{Success: true},
			Method:             "local",
			ClientMetadata:     apievents.ClientMetadata{UserAgent: "tsh/" + CurrentVersion},
			ConnectionMetadata: apievents.ConnectionMetadata{RemoteAddr: remoteAddr(r)},
		}
		if rec.kind == kindLoginFail {
			ev.Code = codeUserLoginFailure
			ev.Status = apievents.Status{Success: false, Error: loginFailureMessage, UserMessage: loginFailureMessage}
		}
		return ev
	case kindDBQuery:
		query := fmt.Sprintf("SELECT * FROM %s WHERE id = %d", pick(r, tables), r.IntN(100000))
		if rec.huge {
			query = hugeQuery(r)
		}
		return &apievents.DatabaseSessionQuery{
			Metadata:        rd.meta(rec.t, typ, codeDatabaseQuery, uid, 0),
			UserMetadata:    user,
			SessionMetadata: apievents.SessionMetadata{SessionID: uuidFrom(r)},
			DatabaseMetadata: apievents.DatabaseMetadata{
				DatabaseService:  "postgres-prod",
				DatabaseProtocol: "postgres",
				DatabaseURI:      "postgres.internal:5432",
				DatabaseName:     "app",
				DatabaseUser:     "app_ro",
			},
			DatabaseQuery: query,
			Status:        apievents.Status{Success: true},
		}
	case kindKube:
		kind, ns := pick(r, kubeKinds), fmt.Sprintf("team-%d", r.IntN(8))
		return &apievents.KubeRequest{
			Metadata:                  rd.meta(rec.t, typ, codeKubeRequest, uid, 0),
			UserMetadata:              user,
			ConnectionMetadata:        apievents.ConnectionMetadata{RemoteAddr: remoteAddr(r)},
			ServerMetadata:            rd.server(r),
			RequestPath:               fmt.Sprintf("/api/v1/namespaces/%s/%s", ns, kind),
			Verb:                      pick(r, verbs),
			ResourceNamespace:         ns,
			ResourceKind:              kind,
			ResponseCode:              200,
			KubernetesClusterMetadata: apievents.KubernetesClusterMetadata{KubernetesCluster: "prod-k8s"},
		}
	case kindRoleCreated:
		return &apievents.RoleCreate{
			Metadata:           rd.meta(rec.t, typ, codeRoleCreated, uid, 0),
			ResourceMetadata:   apievents.ResourceMetadata{Name: fmt.Sprintf("role-%d", r.IntN(1000)), UpdatedBy: user.User},
			UserMetadata:       user,
			ConnectionMetadata: apievents.ConnectionMetadata{RemoteAddr: remoteAddr(r)},
		}
	default: // kindAccessRequest
		return &apievents.AccessRequestCreate{
			Metadata:     rd.meta(rec.t, typ, codeAccessRequest, uid, 0),
			UserMetadata: user,
			Roles:        []string{pick(r, roles)},
			RequestID:    uuidFrom(r),
			RequestState: "PENDING",
			Reason:       fmt.Sprintf("incident #%d", r.IntN(10000)),
		}
	}
}

func hugeQuery(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString("INSERT INTO audit (payload) VALUES ")
	for b.Len() < hugeEventBytes {
		fmt.Fprintf(&b, "('%016x'),", r.Uint64())
	}
	b.WriteString("('end')")
	return b.String()
}

// sessionParts are the fields shared by a session's events.
type sessionParts struct {
	sid    string
	user   apievents.UserMetadata
	server apievents.ServerMetadata
	conn   apievents.ConnectionMetadata
}

func (rd renderer) sessionParts(n int32, sid string) sessionParts {
	r := newRand(rd.seed, 0x5e5, uint64(n))
	return sessionParts{
		sid:    sid,
		user:   apievents.UserMetadata{User: pick(r, users), Login: pick(r, logins)},
		server: rd.server(r),
		conn:   apievents.ConnectionMetadata{RemoteAddr: remoteAddr(r), LocalAddr: "10.0.0.2:3022", Protocol: "ssh"},
	}
}

func (rd renderer) sessionStart(p sessionParts, s session, uid string) *apievents.SessionStart {
	return &apievents.SessionStart{
		Metadata:           rd.meta(s.start, "session.start", codeSessionStart, uid, 0),
		UserMetadata:       p.user,
		SessionMetadata:    apievents.SessionMetadata{SessionID: p.sid},
		ServerMetadata:     p.server,
		ConnectionMetadata: p.conn,
		TerminalSize:       "80:25",
		SessionRecording:   sessionRecordingMode,
	}
}

func (rd renderer) sessionEnd(p sessionParts, s session, uid string) *apievents.SessionEnd {
	return &apievents.SessionEnd{
		Metadata:           rd.meta(s.end, "session.end", codeSessionEnd, uid, int64(s.length()-1)),
		UserMetadata:       p.user,
		SessionMetadata:    apievents.SessionMetadata{SessionID: p.sid},
		ConnectionMetadata: p.conn,
		ServerMetadata:     p.server,
		Interactive:        true,
		Participants:       []string{p.user.User},
		StartTime:          time.UnixMilli(s.start).UTC(),
		EndTime:            time.UnixMilli(s.end).UTC(),
		SessionRecording:   sessionRecordingMode,
	}
}

func (rd renderer) sessionUpload(p sessionParts, s session, uid string) *apievents.SessionUpload {
	return &apievents.SessionUpload{
		Metadata:        rd.meta(s.upload, "session.upload", codeSessionUpload, uid, sessionUploadIndex),
		SessionMetadata: apievents.SessionMetadata{SessionID: p.sid},
		SessionURL:      fmt.Sprintf("s3://sim-recordings/records/%s.tar", p.sid),
	}
}

// render renders any audit record.
func (st *store) render(h hit) apievents.AuditEvent {
	var s session
	if h.rec.sess >= 0 {
		s = st.session(h.rec.sess)
	}
	return st.renderWith(h, s)
}

// renderWith renders an audit record whose session (if it has one) is s;
// it takes no lock, so it serves callers that hold mu.
func (st *store) renderWith(h hit, s session) apievents.AuditEvent {
	rd := st.renderer()
	uid := st.eventUID(h.id)
	if h.rec.sess < 0 {
		return rd.audit(h.id, h.rec, uid)
	}
	p := rd.sessionParts(h.rec.sess, st.sessionID(h.rec.sess))
	switch h.rec.kind {
	case kindSessionStart:
		return rd.sessionStart(p, s, uid)
	case kindSessionEnd:
		return rd.sessionEnd(p, s, uid)
	default:
		return rd.sessionUpload(p, s, uid)
	}
}

// recording renders the events of session n with index >= from.
func (st *store) recording(n int32, from int64) []apievents.AuditEvent {
	rd := st.renderer()
	s := st.session(n)
	p := rd.sessionParts(n, st.sessionID(n))
	r := newRand(st.seed, 0x4ec, uint64(n))
	out := make([]apievents.AuditEvent, 0, s.length())
	add := func(ev apievents.AuditEvent) {
		if ev.GetIndex() >= from {
			out = append(out, ev)
		}
	}
	add(rd.sessionStart(p, s, st.eventUID(s.startRec)))
	step := (s.end - s.start) / int64(s.middle+2)
	var ci, offset int64
	for k := 0; k < s.middle; k++ {
		idx := int64(k + 1)
		t := s.start + step*idx
		if k%8 == 0 {
			add(&apievents.Resize{
				Metadata:           rd.meta(t, "resize", codeResize, uuidFrom(r), idx),
				UserMetadata:       p.user,
				SessionMetadata:    apievents.SessionMetadata{SessionID: p.sid},
				ConnectionMetadata: p.conn,
				ServerMetadata:     p.server,
				TerminalSize:       fmt.Sprintf("%d:%d", 80+r.IntN(120), 24+r.IntN(40)),
			})
			continue
		}
		data := terminalOutput(r, p, k == 1 && s.huge)
		add(&apievents.SessionPrint{
			Metadata:          rd.meta(t, "print", "", "", idx),
			ChunkIndex:        ci,
			Data:              data,
			Bytes:             int64(len(data)),
			DelayMilliseconds: t - s.start,
			Offset:            offset,
		})
		ci++
		offset += int64(len(data))
	}
	leave := int64(s.middle + 1)
	add(&apievents.SessionLeave{
		Metadata:           rd.meta(s.end, "session.leave", codeSessionLeave, uuidFrom(r), leave),
		UserMetadata:       p.user,
		SessionMetadata:    apievents.SessionMetadata{SessionID: p.sid},
		ServerMetadata:     p.server,
		ConnectionMetadata: p.conn,
	})
	add(rd.sessionEnd(p, s, st.eventUID(s.endRec)))
	return out
}

// terminalOutput makes a print event's data: a few shell lines, or over
// 1 MB of them.
func terminalOutput(r *rand.Rand, p sessionParts, huge bool) []byte {
	size := 20 + r.IntN(2000)
	if r.IntN(10) == 0 {
		size = 32<<10 + r.IntN(32<<10)
	}
	if huge {
		size = hugeEventBytes
	}
	var b strings.Builder
	for b.Len() < size {
		fmt.Fprintf(&b, "%s@%s:~$ cat /var/log/app-%d.log\r\n%016x %s\r\n",
			p.user.Login, p.server.ServerHostname, r.IntN(100), r.Uint64(), strings.Repeat("x", r.IntN(60)))
	}
	return []byte(b.String())
}
