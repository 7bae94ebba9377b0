package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/automerge/automerge-go"
	"github.com/coder/websocket"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/pkg/syncengine"
)

// ErrUnavailable is returned by Find when the server has no such document
// (or may not share it).
var ErrUnavailable = errors.New("document unavailable")

// ErrClosed is returned by a Client's methods after Close.
var ErrClosed = errors.New("client closed")

// Options configure a Client. The zero value of every field but URLs is a
// documented default.
type Options struct {
	// URLs are the hub's WebSocket endpoints (ws:// or wss://). The client
	// connects to one at a time and moves on to the next after a failure.
	// Required.
	URLs []string
	// PeerID is the senderId on the wire. Default: "go-" and a random suffix.
	PeerID string
	// Dir, if set, keeps documents and sync states on disk, so a restarted
	// client resumes where it stopped. Default: memory only.
	Dir string
	// NoSync, with Dir, lets Change return before its change is fsynced:
	// changes reach the disk when the OS writes them back, or at Close.
	// Faster (no disk flush on the path of Change), but a power loss or OS
	// crash can lose the last changes made, including ones never synced
	// to a server; a crash of the process alone loses nothing. Default:
	// false: Change returns once its change is on disk, and concurrent
	// Changes share their fsyncs.
	NoSync bool
	// StorageID is announced to the server, which then keeps this client's
	// sync state across connections. Default: with Dir, an id created once
	// and kept in Dir; without Dir, none (an ephemeral peer).
	StorageID string
	// MinBackoff and MaxBackoff bound the jittered exponential wait between
	// connection attempts. Defaults: 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds a connection attempt, join included. Default: 10s.
	DialTimeout time.Duration
	// WriteTimeout bounds each frame written. Default: 10s.
	WriteTimeout time.Duration
	// MaxMessageBytes is the largest frame accepted. Default: 64 MiB.
	MaxMessageBytes int64
	// HTTPClient dials the WebSocket (e.g. from a chosen source address).
	// Default: http.DefaultClient.
	HTTPClient *http.Client
	// Token, if set, returns the access token of a server that requires
	// login. It is called before every connection attempt (so a client
	// that was offline refreshes before it reconnects), one call at a
	// time, with a context bounded by DialTimeout; the token goes in the
	// handshake's Authorization: Bearer header ("" sends none). An error
	// counts as a failed attempt: the client waits its backoff and tries
	// again (Stats.LastErr wraps the error), and documents keep their
	// unsynced changes. A handshake refused with 401 is a failed attempt
	// too. A connection the server closes because the token expired
	// (4401) is reopened at once, with a new Token call.
	// (*TokenSource).Token fits. Default: no token.
	Token func(ctx context.Context) (string, error)
	// Logger receives the client's logs. Default: slog.Default().
	Logger *slog.Logger
	// IndexOnly keeps documents as the sync engine's index alone once they
	// are found: later remote changes are synced, counted in Heads and
	// described to subscribers (Event.Applied) but not applied to the
	// automerge-go document, which then holds this client's own changes
	// on top of what it was found with. For load generators and relays
	// that never read documents: applying changes is most of a client's
	// cost. Default: false.
	IndexOnly bool
}

func (o *Options) fill() error {
	if len(o.URLs) == 0 {
		return errors.New("client: Options.URLs is empty")
	}
	if o.PeerID == "" {
		o.PeerID = "go-" + protocol.RandomHex(8)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(10*time.Second, o.MinBackoff)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Stats are a client's counters since New.
type Stats struct {
	Connects, Disconnects   int64
	ConnectFailures         int64 // attempts that did not end joined
	MessagesIn, MessagesOut int64
	BytesIn, BytesOut       int64
	LastError               string // why the last connection ended or failed: LastErr's text
	// LastErr is why the last connection ended or failed, for errors.Is:
	// ErrRevoked (log in again), ErrUnauthorized, or what Options.Token
	// returned (such as ErrRefreshFailed). Nil before the first failure.
	LastErr error
}

// Client is a connection manager and the documents it syncs.
type Client struct {
	opts  Options
	log   *slog.Logger
	store *diskStore // nil without Dir

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	docs      map[protocol.DocumentID]*Handle
	conn      *conn
	connected chan struct{} // closed while connected; replaced on disconnect
	closed    bool
	lastErr   error

	connects, disconnects atomic.Int64
	connectFailures       atomic.Int64
	msgsIn, msgsOut       atomic.Int64
	bytesIn, bytesOut     atomic.Int64
	session               string // ephemeral sessionId
	ephCount              atomic.Uint64
}

// conn is one joined connection.
type conn struct {
	ws            *websocket.Conn
	server        string // the server's peer id
	serverStorage string // its storage id, "" if it has none
	wmu           sync.Mutex
}

// New returns a client and starts connecting in the background; use
// WaitConnected to wait for the first connection.
func New(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	c := &Client{
		opts:      opts,
		log:       opts.Logger.With("peer", opts.PeerID),
		docs:      make(map[protocol.DocumentID]*Handle),
		connected: make(chan struct{}),
		done:      make(chan struct{}),
		session:   protocol.RandomHex(8),
	}
	if opts.Dir != "" {
		st, err := openDiskStore(opts.Dir, !opts.NoSync)
		if err != nil {
			return nil, err
		}
		c.store = st
		if c.opts.StorageID == "" {
			c.opts.StorageID = st.storageID
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go c.run()
	return c, nil
}

// PeerID returns the client's senderId.
func (c *Client) PeerID() string { return c.opts.PeerID }

// StorageID returns the storage id the client announces ("" if none).
func (c *Client) StorageID() string { return c.opts.StorageID }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	s := Stats{
		Connects: c.connects.Load(), Disconnects: c.disconnects.Load(), ConnectFailures: c.connectFailures.Load(),
		MessagesIn: c.msgsIn.Load(), MessagesOut: c.msgsOut.Load(),
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(), LastErr: last,
	}
	if last != nil {
		s.LastError = last.Error()
	}
	return s
}

// Connected reports whether the client has a joined connection now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// WaitConnected waits until the client has a joined connection.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	ch, closed := c.connected, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// Close disconnects, saves every document's sync state (with Dir) and
// stops the client.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cn := c.conn
	c.mu.Unlock()
	c.cancel()
	if cn != nil {
		_ = cn.ws.Close(websocket.StatusNormalClosure, "client closing")
	}
	<-c.done
	if c.store != nil {
		return c.store.close()
	}
	return nil
}

// Disconnect drops the current connection (as a network failure would);
// the client reconnects after its backoff. For tests and load tests.
func (c *Client) Disconnect() {
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn != nil {
		cn.ws.CloseNow()
	}
}

// run connects, serves the connection until it ends, and reconnects with
// jittered exponential backoff, rotating through the URLs. A connection
// closed because its access token expired is reopened at once.
func (c *Client) run() {
	defer close(c.done)
	attempt := 0
	for i := 0; c.ctx.Err() == nil; i++ {
		url := c.opts.URLs[i%len(c.opts.URLs)]
		cn, err := c.dial(url)
		if err != nil {
			c.connectFailures.Add(1)
			c.setErr(fmt.Errorf("failed to connect to %s: %w", url, err))
			c.log.Debug("connect failed", "url", url, "err", err)
			attempt++
			if !c.sleep(c.backoff(attempt)) {
				return
			}
			continue
		}
		attempt = 0
		c.connects.Add(1)
		c.attach(cn)
		err = c.readLoop(cn)
		c.detach(cn)
		c.disconnects.Add(1)
		if c.ctx.Err() != nil {
			c.setErr(errors.New("closed by the client"))
			return
		}
		code := protocol.CloseCode(websocket.CloseStatus(err))
		if code == protocol.CloseRevoked {
			err = fmt.Errorf("%w: %w", ErrRevoked, err)
		}
		c.setErr(fmt.Errorf("connection to %s ended: %w", url, err))
		c.log.Debug("disconnected", "url", url, "err", err)
		i-- // retry the same URL first
		if code == protocol.CloseTokenExpired {
			continue // with a new token, at once
		}
		attempt++
		if !c.sleep(c.backoff(attempt)) {
			return
		}
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// backoff returns the wait before attempt n: MinBackoff doubled per
// attempt up to MaxBackoff, then jittered to a random point in its upper
// half, so clients dropped together do not return together.
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinBackoff
	for i := 1; i < n && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// dial opens a WebSocket to url, with a token from Options.Token, and
// joins.
func (c *Client) dial(url string) (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
	defer cancel()
	var header http.Header
	if c.opts.Token != nil {
		tok, err := c.opts.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to get an access token: %w", err)
		}
		if tok != "" {
			header = http.Header{"Authorization": {"Bearer " + tok}}
		}
	}
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: c.opts.HTTPClient, HTTPHeader: header})
	if err != nil {
		return nil, handshakeError(resp, err)
	}
	ws.SetReadLimit(c.opts.MaxMessageBytes)
	cn := &conn{ws: ws}
	join := &protocol.Message{
		Type: protocol.TypeJoin, SenderID: c.opts.PeerID,
		SupportedProtocolVersions: []string{protocol.ProtocolVersion},
		PeerMetadata:              &protocol.PeerMetadata{StorageID: c.opts.StorageID, IsEphemeral: c.opts.StorageID == ""},
	}
	if err := c.write(cn, join); err != nil {
		ws.CloseNow()
		return nil, err
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("no answer to join: %w", err)
	}
	m, err := protocol.Decode(b)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("bad answer to join: %w", err)
	}
	if m.Type == protocol.TypeError {
		err := c.closeAfterError(cn)
		ws.CloseNow()
		if protocol.CloseCode(websocket.CloseStatus(err)) == protocol.CloseRevoked {
			return nil, fmt.Errorf("server refused the join: %w: %s: %w", ErrRevoked, m.ErrorMessage, err)
		}
		return nil, fmt.Errorf("server refused the join: %s: %w", m.ErrorMessage, err)
	}
	if m.Type != protocol.TypePeer {
		ws.CloseNow()
		return nil, fmt.Errorf("expected a peer message, got %q", m.Type)
	}
	cn.server = m.SenderID
	if m.PeerMetadata != nil && !m.PeerMetadata.IsEphemeral {
		cn.serverStorage = m.PeerMetadata.StorageID
	}
	return cn, nil
}

// handshakeError explains a refused handshake with the server's JSON error
// message; a 401 is ErrUnauthorized, or ErrRevoked if the server says so.
func handshakeError(resp *http.Response, err error) error {
	if resp == nil || resp.Body == nil {
		return err
	}
	// On a failed handshake coder/websocket keeps the first KiB of the body.
	b, _ := io.ReadAll(resp.Body)
	msg := errorMessage(b, "")
	switch {
	case resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(msg, "access revoked"):
		return fmt.Errorf("%w (HTTP 401): %s", ErrRevoked, msg)
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%w (HTTP 401): %s", ErrUnauthorized, cmp.Or(msg, "no reason given"))
	case msg != "":
		return fmt.Errorf("%w: %s", err, msg)
	}
	return err
}

// closeWait bounds the wait for the close that follows a server's error
// message.
const closeWait = 5 * time.Second

// closeAfterError reads what follows an error message from the server
// until its close frame (at most closeWait) and returns the read's error,
// which carries the close code: the code says whether to refresh the
// token (4401) or to log in again (4410).
func (c *Client) closeAfterError(cn *conn) error {
	ctx, cancel := context.WithTimeout(c.ctx, closeWait)
	defer cancel()
	for {
		if _, _, err := cn.ws.Read(ctx); err != nil {
			return err
		}
	}
}

// write sends one message on cn.
func (c *Client) write(cn *conn, m *protocol.Message) error {
	b, err := protocol.Encode(m)
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", m.Type, err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.WriteTimeout)
	defer cancel()
	cn.wmu.Lock()
	err = cn.ws.Write(ctx, websocket.MessageBinary, b)
	cn.wmu.Unlock()
	if err != nil {
		return err
	}
	c.msgsOut.Add(1)
	c.bytesOut.Add(int64(len(b)))
	return nil
}

// attach makes cn the current connection and starts every document's
// sync on it.
func (c *Client) attach(cn *conn) {
	c.mu.Lock()
	c.conn = cn
	close(c.connected)
	hs := c.handlesLocked()
	c.mu.Unlock()
	for _, h := range hs {
		h.connect(cn)
	}
}

// detach ends cn: documents keep their sync states (saved with Dir).
func (c *Client) detach(cn *conn) {
	cn.ws.CloseNow()
	c.mu.Lock()
	if c.conn == cn {
		c.conn = nil
		c.connected = make(chan struct{})
	}
	hs := c.handlesLocked()
	c.mu.Unlock()
	for _, h := range hs {
		h.disconnect(cn)
	}
}

// handlesLocked returns the open handles; the caller holds c.mu.
func (c *Client) handlesLocked() []*Handle {
	hs := make([]*Handle, 0, len(c.docs))
	for _, h := range c.docs {
		hs = append(hs, h)
	}
	return hs
}

func (c *Client) readLoop(cn *conn) error {
	for {
		_, b, err := cn.ws.Read(c.ctx)
		if err != nil {
			return err
		}
		c.msgsIn.Add(1)
		c.bytesIn.Add(int64(len(b)))
		m, err := protocol.Decode(b)
		if err != nil {
			return fmt.Errorf("server sent an undecodable message: %w", err)
		}
		switch m.Type {
		case protocol.TypeSync, protocol.TypeRequest:
			if h := c.lookup(m.DocumentID); h != nil {
				if err := h.receive(cn, m.Data); err != nil {
					return err
				}
			}
		case protocol.TypeDocUnavailable:
			if h := c.lookup(m.DocumentID); h != nil {
				h.markUnavailable(cn)
			}
		case protocol.TypeEphemeral:
			if h := c.lookup(m.DocumentID); h != nil {
				h.deliverEphemeral(m.SenderID, m.Data)
			}
		case protocol.TypeError:
			return fmt.Errorf("server error: %s: %w", m.ErrorMessage, c.closeAfterError(cn))
		}
	}
}

func (c *Client) lookup(id protocol.DocumentID) *Handle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[id]
}

// current returns the connection in use, or nil.
func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// Create makes a new document, runs init on it (it may be nil) and starts
// syncing it.
func (c *Client) Create(init func(d *automerge.Doc) error) (*Handle, error) {
	id := protocol.NewDocumentID()
	h, err := c.open(id, true)
	if err != nil {
		return nil, err
	}
	// The first change exists even if init does nothing: a document
	// without changes would never reach the server.
	if err := h.change("", init, true); err != nil {
		return nil, err
	}
	return h, nil
}

// Find returns the document with the given automerge: URL or bare id:
// from Dir if it is kept there, else from the server. It waits until the
// document has arrived, the server says it is unavailable (ErrUnavailable)
// or ctx is done. Offline, a document kept in Dir is returned at once.
func (c *Client) Find(ctx context.Context, url string) (*Handle, error) {
	id, err := protocol.ParseDocumentID(url)
	if err != nil {
		return nil, err
	}
	h, err := c.open(id, false)
	if err != nil {
		return nil, err
	}
	if err := h.waitReady(ctx); err != nil {
		if errors.Is(err, ErrUnavailable) {
			c.mu.Lock()
			if c.docs[id] == h {
				delete(c.docs, id)
			}
			c.mu.Unlock()
		}
		return nil, err
	}
	return h, nil
}

// open returns the handle of id, making it (loaded from Dir if kept
// there) and starting its sync if it is new.
func (c *Client) open(id protocol.DocumentID, created bool) (*Handle, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if h := c.docs[id]; h != nil {
		c.mu.Unlock()
		return h, nil
	}
	h, err := newHandle(c, id, created)
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.docs[id] = h
	cn := c.conn
	c.mu.Unlock()
	if cn != nil {
		h.connect(cn)
	}
	return h, nil
}

// Hash is an Automerge change hash.
type Hash = syncengine.Hash
