package api

import "github.com/labstack/echo/v4"

// addRoute registers one documented route (see register).
type addRoute func(method, path, auth, tag, summary string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc)

// registerEvidence adds the evidence routes (missing-blob check, resumable
// uploads, downloads). Filled in by the evidence work.
func (s *Server) registerEvidence(add addRoute) {}
