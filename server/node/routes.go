package node

import (
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/plaithub/plait/pkg/protocol"
	"github.com/plaithub/plait/server/auth"
	"github.com/plaithub/plait/webclient"
)

// validRequestID reports whether a client's X-Request-Id can be kept: 1 to
// 64 letters, digits, '-', '_', '.' or ':' (what tracing proxies and
// client libraries send), nothing that could disturb a log line.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// routes declares every route of the node, in the order Fiber matches
// them: the middleware every request passes (request id, audit and
// blocking, the per-address rate), the probes and metrics, the WebSocket,
// and on a node with login the /auth/ routes (login.go) and the REST API
// (api.go); the documents API (api_docs.go) on every node; and last the
// web app at / (static.go).
func (n *Node) routes(app *fiber.App) {
	app.Use(func(c *fiber.Ctx) error {
		id := string(c.Request().Header.Peek("X-Request-Id"))
		if !validRequestID(id) {
			id = protocol.RandomHex(8)
		}
		c.Locals("request_id", id)
		c.Set("X-Request-Id", id)
		return c.Next()
	})
	app.Use(n.clientMiddleware) // the client behind a trusted proxy (proxy.go)
	app.Use(n.traceMiddleware)  // a span per request (tracing.go)
	app.Use(n.blocks.middleware)
	app.Use(n.limitHTTP)
	app.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	app.Get("/readyz", func(c *fiber.Ctx) error {
		if n.draining.Load() {
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "draining"})
		}
		return c.JSON(fiber.Map{"status": "ready", "peerId": n.hub.PeerID(), "storageId": n.hub.StorageID()})
	})
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	app.Get("/metrics", func(c *fiber.Ctx) error {
		metrics(c.Context())
		return nil
	})
	app.Get("/ws", n.handleWS)
	// Which login buttons to show; "login": false is an anonymous node
	// (the web app then shows no login screen).
	app.Get("/auth/providers", func(c *fiber.Ctx) error {
		if n.auth == nil {
			return c.JSON(fiber.Map{"login": false, "providers": []string{}})
		}
		return c.JSON(fiber.Map{"login": true, "providers": n.auth.login.Providers()})
	})
	if n.auth != nil {
		app.Get("/auth/:provider/login", n.handleLogin)
		app.Get("/auth/:provider/callback", n.handleLoginCallback)
		app.Post("/auth/refresh", n.handleRefresh)
		app.Post("/auth/logout", n.handleLogout)
		app.Get("/api/me", n.withUser(func(c *fiber.Ctx, a auth.Access) error {
			return c.JSON(fiber.Map{"user": a.User, "expires_at": a.Expires})
		}))
		app.Post("/api/docs", n.withUser(n.createDoc))
		app.Get("/api/docs", n.withUser(n.listDocs))
		app.Get("/api/docs/:id", n.withUser(n.getDoc))
		app.Put("/api/docs/:id/users/:user", n.withUser(n.shareDoc))
		app.Delete("/api/docs/:id/users/:user", n.withUser(n.unshareDoc))
		app.Put("/api/docs/:id/link", n.withUser(n.setLink))
		app.Post("/api/admin/revoke-user", n.handleRevokeUser)
	}
	newDocAPI(n).routes(app) // content, history, changes, export, import (api_docs.go)
	n.deleteRoutes(app)      // api_delete.go
	// The web app (static.go): whatever no route above took.
	site := newStaticSite(webclient.Files())
	app.Get("/*", site.handle)
}
