package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"fieldsync/server/export"
	"fieldsync/syncproto"
)

// Who may call a route.
const (
	authNone       = "none"
	authUser       = "user"       // any signed-in user
	authAdmin      = "admin"      // admin only
	authSupervisor = "supervisor" // admin or supervisor
	authDevice     = "device"     // enrolled device token
)

// RouteDoc documents one route for the OpenAPI document.
type RouteDoc struct {
	Method  string
	Path    string // echo style, e.g. /api/v1/users/:id
	Summary string
	Auth    string
	Tag     string
}

type route struct {
	RouteDoc
	h echo.HandlerFunc
}

// APIPrefix is the versioned prefix of the JSON API.
const APIPrefix = "/api/v1"

func (s *Server) register() {
	loginLimit := rateLimiter(s.cfg.LoginRate)
	enrollLimit := rateLimiter(s.cfg.EnrollRate)
	add := func(method, path, auth, tag, summary string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) {
		s.routes = append(s.routes, route{RouteDoc{method, path, summary, auth, tag}, h})
		mws := append([]echo.MiddlewareFunc{s.authenticate(auth)}, mw...)
		s.e.Add(method, path, h, mws...)
	}
	p := APIPrefix
	add(http.MethodGet, "/healthz", authNone, "ops", "Health of the database and blob storage", s.healthz)
	add(http.MethodGet, "/metrics", authNone, "ops", "Prometheus metrics", echo.WrapHandler(promhttp.Handler()))
	add(http.MethodGet, "/openapi.json", authNone, "ops", "This OpenAPI 3 document", s.openapi)

	add(http.MethodPost, p+"/auth/login", authNone, "auth", "Sign in with username and password; returns a bearer token and sets a session cookie", s.login, loginLimit)
	add(http.MethodPost, p+"/auth/logout", authUser, "auth", "End the current session", s.logout)
	add(http.MethodGet, p+"/me", authUser, "auth", "The signed-in user", s.me)

	add(http.MethodGet, p+"/places", authUser, "places", "Places visible to the caller as a GeoJSON FeatureCollection", s.listPlaces)
	add(http.MethodPost, p+"/places/import", authAdmin, "places", "Import places from a GeoJSON FeatureCollection (all or nothing)", s.importPlaces)
	add(http.MethodGet, p+"/places/:code", authUser, "places", "One place as a GeoJSON Feature", s.getPlace)

	add(http.MethodGet, p+"/users", authSupervisor, "users", "List users", s.listUsers)
	add(http.MethodPost, p+"/users", authAdmin, "users", "Create a user", s.createUser)
	add(http.MethodGet, p+"/users/:id", authSupervisor, "users", "One user", s.getUser)
	add(http.MethodPut, p+"/users/:id/places", authAdmin, "users", "Replace a user's assigned places", s.setUserPlaces)
	add(http.MethodPost, p+"/users/:id/enrollment-codes", authAdmin, "devices", "Issue a one-time device enrollment code for a user", s.createEnrollmentCode)

	add(http.MethodPost, p+"/devices/enroll", authNone, "devices", "Exchange an enrollment code for a device token", s.enroll, enrollLimit)
	add(http.MethodGet, p+"/devices", authSupervisor, "devices", "List devices with their sync health", s.listDevices)
	add(http.MethodPost, p+"/devices/:id/revoke", authSupervisor, "devices", "Revoke a device token", s.revokeDevice)
	add(http.MethodGet, p+"/device", authDevice, "sync", "The calling device", s.deviceSelf)

	add(http.MethodGet, p+"/forms", authUser, "forms", "Forms, every version (latest=1: the newest of each)", s.listForms)
	add(http.MethodPost, p+"/forms", authAdmin, "forms", "Publish a form definition as the next version of its id", s.publishForm)
	add(http.MethodGet, p+"/forms/:id/versions/:version", authUser, "forms", "One version of a form", s.getForm)
	add(http.MethodPost, p+"/forms/:id/versions/:version/validate", authUser, "forms", "Validate answers against a form version", s.validateAnswers)

	add(http.MethodPost, p+"/sync/push", authDevice, "sync", "Push a batch of device mutations (syncproto.PushRequest)", s.push)
	add(http.MethodPost, p+"/sync/pull", authDevice, "sync", "Pull the next page of changes (syncproto.PullRequest)", s.pull)

	add(http.MethodGet, p+"/export", authSupervisor, "export", "Export visits or households (CSV with BOM, XLSX, GeoJSON; ?what,format,place,form,state,from,to,lang,mask)",
		export.Handler(s.store, export.Options{Source: "api"}))

	s.registerReview(add)
	s.registerEvidence(add)
}

func (s *Server) openapi(c echo.Context) error {
	return c.JSON(http.StatusOK, OpenAPI(s.Routes()))
}

// OpenAPI builds the OpenAPI 3 document for routes.
func OpenAPI(routes []RouteDoc) map[string]any {
	paths := map[string]map[string]any{}
	for _, r := range routes {
		path, params := openapiPath(r.Path)
		op := map[string]any{
			"summary": r.Summary,
			"tags":    []string{r.Tag},
			"responses": map[string]any{
				"200":     map[string]any{"description": "OK"},
				"default": map[string]any{"description": "Error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}},
			},
		}
		if len(params) > 0 {
			var ps []map[string]any
			for _, name := range params {
				ps = append(ps, map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
			}
			op["parameters"] = ps
		}
		switch r.Auth {
		case authNone:
			op["security"] = []any{}
		case authDevice:
			op["security"] = []any{map[string]any{"deviceToken": []string{}}}
		case authUserOrDevice:
			op["security"] = []any{map[string]any{"deviceToken": []string{}}, map[string]any{"bearer": []string{}}, map[string]any{"sessionCookie": []string{}}}
		default:
			op["security"] = []any{map[string]any{"bearer": []string{}}, map[string]any{"sessionCookie": []string{}}}
			op["x-fieldsync-role"] = r.Auth
		}
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		paths[path][strings.ToLower(r.Method)] = op
	}
	codes := []string{}
	for _, c := range syncproto.Codes() {
		codes = append(codes, string(c))
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":       "fieldsync",
			"version":     "1",
			"description": "Offline-first field data-collection sync server. Sync protocol version " + itoa(syncproto.ProtocolVersion) + "; see syncproto/doc.go.",
		},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"bearer":        map[string]any{"type": "http", "scheme": "bearer", "description": "Session token from /api/v1/auth/login"},
				"sessionCookie": map[string]any{"type": "apiKey", "in": "cookie", "name": SessionCookie, "description": "Writes also need the X-CSRF-Token header"},
				"deviceToken":   map[string]any{"type": "http", "scheme": "bearer", "description": "Device token from /api/v1/devices/enroll"},
			},
			"schemas": map[string]any{
				"Error": map[string]any{
					"type":     "object",
					"required": []string{"code", "message"},
					"properties": map[string]any{
						"code":    map[string]any{"type": "string", "enum": codes},
						"message": map[string]any{"type": "string"},
						"details": map[string]any{"type": "object"},
					},
				},
			},
		},
	}
}

// OpenAPIPath converts an echo path to OpenAPI form and lists its params.
func openapiPath(p string) (string, []string) {
	parts := strings.Split(p, "/")
	var params []string
	for i, part := range parts {
		if strings.HasPrefix(part, ":") {
			params = append(params, part[1:])
			parts[i] = "{" + part[1:] + "}"
		}
	}
	return strings.Join(parts, "/"), params
}

func itoa(i int) string { return strconv.Itoa(i) }
