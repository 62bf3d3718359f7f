// gopeer: a real Ergo node for ergo_py's interop tests.
//
// It starts an Ergo node (acceptor on a free port, TLS when -cert/-key are
// given, certificate reloaded from the files on SIGHUP), registers an "echo"
// process (calls return the request; plain integer messages are counted and
// checked for order per sender) and takes commands on stdin, one per line.
// Every answer is one stdout line starting with ">> "; Ergo's own log lines
// go to stderr. Asynchronous happenings (exits, downs, reloads) are
// ">> event ..." lines.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ergo.services/ergo"
	"ergo.services/ergo/act"
	"ergo.services/ergo/gen"
)

var outMu sync.Mutex

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(">> "+format+"\n", args...)
}

// --- a registrar that registers nothing: routes are static in the tests ---

type noRegistrar struct{}

func (noRegistrar) Register(gen.NodeRegistrar, gen.RegisterRoutes) (gen.StaticRoutes, error) {
	return gen.StaticRoutes{}, nil
}
func (r noRegistrar) Resolver() gen.Resolver                        { return r }
func (noRegistrar) RegisterProxy(gen.Atom) error                      { return gen.ErrUnsupported }
func (noRegistrar) UnregisterProxy(gen.Atom) error                    { return gen.ErrUnsupported }
func (noRegistrar) RegisterApplicationRoute(gen.ApplicationRoute) error { return gen.ErrUnsupported }
func (noRegistrar) UnregisterApplicationRoute(gen.Atom) error         { return gen.ErrUnsupported }
func (noRegistrar) Nodes() ([]gen.Atom, error)                        { return nil, nil }
func (noRegistrar) Config(...string) (map[string]any, error)          { return nil, nil }
func (noRegistrar) ConfigItem(string) (any, error)                    { return nil, gen.ErrUnknown }
func (noRegistrar) Event() (gen.Event, error)                         { return gen.Event{}, gen.ErrUnsupported }
func (noRegistrar) Info() gen.RegistrarInfo                           { return gen.RegistrarInfo{} }
func (noRegistrar) Terminate()                                        {}
func (noRegistrar) Version() gen.Version {
	return gen.Version{Name: "none", Release: "R1", License: gen.LicenseMIT}
}
func (noRegistrar) Resolve(gen.Atom) ([]gen.Route, error) { return nil, gen.ErrNoRoute }
func (noRegistrar) ResolveProxy(gen.Atom) ([]gen.ProxyRoute, error) {
	return nil, gen.ErrNoRoute
}
func (noRegistrar) ResolveApplication(gen.Atom) ([]gen.ApplicationRoute, error) {
	return nil, gen.ErrNoRoute
}

// --- echo: answers calls with the request; counts ordered integer messages ---

type echo struct {
	act.Actor
	next     map[gen.PID]int
	count    int
	disorder int
	first    string // the first message out of order: who, what was due, what came
}

func (e *echo) Init(args ...any) error {
	e.next = make(map[gen.PID]int)
	return nil
}

func (e *echo) HandleMessage(from gen.PID, message any) error {
	e.count++
	if i, ok := message.(int); ok {
		if i != e.next[from] {
			if e.disorder == 0 {
				e.first = fmt.Sprintf("%s due %d got %d", from, e.next[from], i)
			}
			e.disorder++
		}
		e.next[from] = i + 1
	}
	return nil
}

func (e *echo) HandleCall(from gen.PID, ref gen.Ref, request any) (any, error) {
	switch request {
	case "stats":
		return fmt.Sprintf("count=%d disorder=%d", e.count, e.disorder), nil
	case "reset":
		e.next = make(map[gen.PID]int)
		e.count, e.disorder, e.first = 0, 0, ""
		return "ok", nil
	case "disorder":
		return e.first, nil
	case "whoami":
		return from, nil
	}
	return request, nil
}

// --- watcher: links or monitors a target and reports what it hears ---

type watcher struct {
	act.Actor
}

func (w *watcher) Init(args ...any) error {
	w.SetTrapExit(true)
	return nil
}

func (w *watcher) HandleMessage(from gen.PID, message any) error {
	switch m := message.(type) {
	case gen.MessageExitPID:
		say("event exit %s %v", m.PID, m.Reason)
	case gen.MessageExitProcessID:
		say("event exit %s %v", m.ProcessID, m.Reason)
	case gen.MessageDownPID:
		say("event down %s %v", m.PID, m.Reason)
	case gen.MessageDownProcessID:
		say("event down %s %v", m.ProcessID, m.Reason)
	case watch:
		var err error
		if m.monitor {
			err = w.Monitor(m.target)
		} else {
			err = w.Link(m.target)
		}
		m.reply <- err
	default:
		say("event watcher %T %v", message, message)
	}
	return nil
}

type watch struct {
	target  any
	monitor bool
	reply   chan error
}

// --- victim: a process the Python side links to; ends on "stop" ---

type victim struct {
	act.Actor
}

func (v *victim) HandleMessage(from gen.PID, message any) error {
	if message == "stop" {
		return errors.New("stopped by the test")
	}
	return nil
}

func (v *victim) HandleCall(from gen.PID, ref gen.Ref, request any) (any, error) {
	return v.PID(), nil
}

// --- driver: runs the commands that need a process (send, call) ---

type driver struct {
	act.Actor
}

type command struct {
	args  []string
	reply chan string
}

func (d *driver) HandleMessage(from gen.PID, message any) error {
	c, ok := message.(command)
	if !ok { // a message to the driver's alias
		say("event driver %s %T %v", from, message, message)
		return nil
	}
	c.reply <- d.run(c.args)
	return nil
}

// HandleCall: calls to the driver (by its alias) return the request.
func (d *driver) HandleCall(from gen.PID, ref gen.Ref, request any) (any, error) {
	return request, nil
}

func reasonOf(text string) error {
	switch text {
	case "normal":
		return gen.TerminateReasonNormal
	case "shutdown":
		return gen.TerminateReasonShutdown
	case "kill":
		return gen.TerminateReasonKill
	}
	return errors.New(text)
}

// aliasOf: NODE ID0 ID1 ID2 CREATION as a gen.Alias.
func aliasOf(a []string) gen.Alias {
	var alias gen.Alias
	alias.Node = gen.Atom(a[0])
	for i := 0; i < 3; i++ {
		alias.ID[i], _ = strconv.ParseUint(a[1+i], 10, 64)
	}
	alias.Creation, _ = strconv.ParseInt(a[4], 10, 64)
	return alias
}

func target(node, name string) gen.ProcessID {
	return gen.ProcessID{Node: gen.Atom(node), Name: gen.Atom(name)}
}

func (d *driver) run(a []string) string {
	switch a[0] {
	case "send": // send NODE NAME N [mixed]: integers 0..N-1 in order, or the bench's message
		n, _ := strconv.Atoi(a[3])
		to := target(a[1], a[2])
		mixed := []any{"msg", 12345, bytes.Repeat([]byte("x"), 32), map[any]any{"k": 1}}
		for i := 0; i < n; i++ {
			var message any = i
			if len(a) > 4 {
				message = mixed
			}
			if err := d.Send(to, message); err != nil {
				return fmt.Sprintf("err send %d: %s", i, err)
			}
		}
		return fmt.Sprintf("ok sent %d", n)
	case "call": // call NODE NAME N: N calls with integer requests, each must come back
		n, _ := strconv.Atoi(a[3])
		to := target(a[1], a[2])
		for i := 0; i < n; i++ {
			v, err := d.CallWithTimeout(to, i, 5)
			if err != nil {
				return fmt.Sprintf("err call %d: %s", i, err)
			}
			if v != i {
				return fmt.Sprintf("err call %d: answered %T %v", i, v, v)
			}
		}
		return fmt.Sprintf("ok calls %d", n)
	case "callfor": // callfor NODE NAME SECONDS: calls for that long; how many, in how long
		secs, _ := strconv.ParseFloat(a[3], 64)
		to := target(a[1], a[2])
		start := time.Now()
		deadline := start.Add(time.Duration(secs * float64(time.Second)))
		n := 0
		for time.Now().Before(deadline) {
			if _, err := d.CallWithTimeout(to, n, 5); err != nil {
				return fmt.Sprintf("err call %d: %s", n, err)
			}
			n++
		}
		return fmt.Sprintf("ok %d %f", n, time.Since(start).Seconds())
	case "exit": // exit NODE ID CREATION REASON: an exit signal from the driver
		id, _ := strconv.ParseUint(a[2], 10, 64)
		creation, _ := strconv.ParseInt(a[3], 10, 64)
		pid := gen.PID{Node: gen.Atom(a[1]), ID: id, Creation: creation}
		if err := d.SendExit(pid, reasonOf(strings.Join(a[4:], " "))); err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprintf("ok exit from %d", d.PID().ID)
	case "alias": // alias: a new alias of the driver (calls to it return the request)
		alias, err := d.CreateAlias()
		if err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprintf("ok %d %d %d %d", alias.ID[0], alias.ID[1], alias.ID[2], alias.Creation)
	case "sendalias": // sendalias NODE ID0 ID1 ID2 CREATION TEXT
		if err := d.Send(aliasOf(a[1:6]), strings.Join(a[6:], " ")); err != nil {
			return "err " + err.Error()
		}
		return "ok sent"
	case "callalias": // callalias NODE ID0 ID1 ID2 CREATION TEXT
		v, err := d.CallWithTimeout(aliasOf(a[1:6]), strings.Join(a[6:], " "), 5)
		if err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprintf("ok %T %v", v, v)
	case "callone": // callone NODE NAME TEXT: one call with a string request
		v, err := d.CallWithTimeout(target(a[1], a[2]), strings.Join(a[3:], " "), 5)
		if err != nil {
			return fmt.Sprintf("err %s", err)
		}
		return fmt.Sprintf("ok %T %v", v, v)
	}
	return "err unknown command " + a[0]
}

// --- the node ---

type peer struct {
	node     gen.Node
	cm       gen.CertManager
	certFile string
	keyFile  string
	tls      bool
}

func (p *peer) reload() {
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		say("event reload-failed %s", err)
		return
	}
	p.cm.Update(cert)
	say("event reloaded %x", sha256.Sum256(cert.Certificate[0]))
}

func (p *peer) command(driverPID gen.PID, line string) string {
	a := strings.Fields(line)
	if len(a) == 0 {
		return "err empty"
	}
	switch a[0] {
	case "route": // route NODE HOST PORT [COOKIE]
		port, _ := strconv.Atoi(a[3])
		route := gen.NetworkRoute{
			Route: gen.Route{Host: a[2], Port: uint16(port), TLS: p.tls},
		}
		if len(a) > 4 {
			route.Cookie = a[4]
		}
		if p.tls {
			route.Cert = p.cm
		}
		if err := p.node.Network().AddRoute(a[1], route, 0); err != nil {
			return "err " + err.Error()
		}
		return "ok route"
	case "disconnect": // disconnect NODE
		rn, err := p.node.Network().Node(gen.Atom(a[1]))
		if err != nil {
			return "err " + err.Error()
		}
		rn.Disconnect()
		return "ok disconnected"
	case "spawn": // spawn NAME: a victim process registered as NAME
		pid, err := p.node.SpawnRegister(gen.Atom(a[1]), func() gen.ProcessBehavior { return &victim{} }, gen.ProcessOptions{})
		if err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprintf("ok %d %d", pid.ID, pid.Creation)
	case "stop": // stop NAME: the victim ends with an error reason
		if err := p.node.Send(gen.Atom(a[1]), "stop"); err != nil {
			return "err " + err.Error()
		}
		return "ok stopping"
	case "link", "monitor": // link NODE NAME | link NODE ID CREATION
		pid, err := p.node.Spawn(func() gen.ProcessBehavior { return &watcher{} }, gen.ProcessOptions{})
		if err != nil {
			return "err " + err.Error()
		}
		var t any = target(a[1], a[2])
		if len(a) > 3 {
			id, _ := strconv.ParseUint(a[2], 10, 64)
			creation, _ := strconv.ParseInt(a[3], 10, 64)
			t = gen.PID{Node: gen.Atom(a[1]), ID: id, Creation: creation}
		}
		reply := make(chan error, 1)
		if err := p.node.Send(pid, watch{target: t, monitor: a[0] == "monitor", reply: reply}); err != nil {
			return "err " + err.Error()
		}
		select {
		case err := <-reply:
			if err != nil {
				return "err " + err.Error()
			}
			return "ok watching"
		case <-time.After(10 * time.Second):
			return "err timeout"
		}
	case "trap": // trap NAME: a watcher (trapping exits) registered as NAME
		pid, err := p.node.SpawnRegister(gen.Atom(a[1]), func() gen.ProcessBehavior { return &watcher{} }, gen.ProcessOptions{})
		if err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprintf("ok %d %d", pid.ID, pid.Creation)
	case "enable": // enable NAME: a victim factory other nodes may spawn as NAME
		if err := p.node.Network().EnableSpawn(gen.Atom(a[1]), func() gen.ProcessBehavior { return &victim{} }); err != nil {
			return "err " + err.Error()
		}
		return "ok enabled"
	case "remotespawn": // remotespawn NODE NAME: ask NODE to spawn NAME
		rn, err := p.node.Network().GetNode(gen.Atom(a[1]))
		if err != nil {
			return "err " + err.Error()
		}
		pid, err := rn.Spawn(gen.Atom(a[2]), gen.ProcessOptions{})
		if err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprintf("ok %s", pid)
	case "send", "call", "callone", "callfor", "exit", "alias", "sendalias", "callalias":
		reply := make(chan string, 1)
		if err := p.node.Send(driverPID, command{args: a, reply: reply}); err != nil {
			return "err " + err.Error()
		}
		select {
		case r := <-reply:
			return r
		case <-time.After(120 * time.Second):
			return "err timeout"
		}
	}
	return "err unknown command " + a[0]
}

func main() {
	name := flag.String("name", "go@localhost", "node name")
	cookie := flag.String("cookie", "", "cookie")
	certFile := flag.String("cert", "", "certificate chain (PEM); TLS when given")
	keyFile := flag.String("key", "", "private key (PEM)")
	insecure := flag.Bool("insecure", false, "dial without verifying the peer's certificate")
	nospawn := flag.Bool("nospawn", false, "take no remote spawn requests (EnableRemoteSpawn off)")
	flag.Parse()

	p := &peer{certFile: *certFile, keyFile: *keyFile, tls: *certFile != ""}
	var options gen.NodeOptions
	options.Log.DefaultLogger.Output = os.Stderr
	options.Log.Level = gen.LogLevelWarning
	options.Network.Cookie = *cookie
	options.Network.Registrar = noRegistrar{}
	options.Network.InsecureSkipVerify = *insecure
	if *nospawn {
		flags := gen.DefaultNetworkFlags
		flags.EnableRemoteSpawn = false
		options.Network.Flags = flags
	}
	if p.tls {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "certificate:", err)
			os.Exit(2)
		}
		p.cm = gen.CreateCertManager(cert)
		options.CertManager = p.cm
	}
	host := strings.SplitN(*name, "@", 2)[1]
	// Ergo has no "port 0": start somewhere random and let it skip taken ports up
	// to PortRange (in Ergo v3.2 the last port to try, not a count).
	start := uint16(20000 + rand.New(rand.NewSource(time.Now().UnixNano())).Intn(30000))
	options.Network.Acceptors = []gen.AcceptorOptions{{
		Host: host, Port: start, PortRange: start + 2000, Cookie: *cookie, CertManager: p.cm,
	}}

	node, err := ergo.StartNode(gen.Atom(*name), options)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(2)
	}
	p.node = node
	if _, err := node.SpawnRegister("echo", func() gen.ProcessBehavior { return &echo{} }, gen.ProcessOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(2)
	}
	driverPID, err := node.Spawn(func() gen.ProcessBehavior { return &driver{} }, gen.ProcessOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(2)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			p.reload()
		}
	}()

	acceptors, _ := node.Network().Acceptors()
	port := strings.TrimPrefix(acceptors[0].Info().Interface, host+":")
	if i := strings.LastIndex(port, ":"); i >= 0 {
		port = port[i+1:]
	}
	say("ready %s %d", port, node.Creation())

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "quit" {
			break
		}
		// One command at a time; SIGHUP (a reload) is handled meanwhile.
		say("%s", p.command(driverPID, line))
	}
	node.Stop()
}
