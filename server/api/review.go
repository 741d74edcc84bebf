package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"fieldsync/server/domain"
	"fieldsync/server/store"
	"fieldsync/syncproto"
)

func (s *Server) registerReview(add addRoute) {
	p := APIPrefix
	add(http.MethodGet, p+"/households", authUser, "households", "Households of a place subtree (place=CODE)", s.listHouseholds)
	add(http.MethodGet, p+"/households/:id", authUser, "households", "A household with its visits and conflicts", s.getHousehold)
	add(http.MethodGet, p+"/households/:id/audit", authSupervisor, "audit", "Audit trail of a household and its visits", s.householdAudit)
	add(http.MethodGet, p+"/visits", authSupervisor, "review", "Review queue: visits filtered by place, form, state, flag and date (from, to)", s.listVisits)
	add(http.MethodGet, p+"/visits/:id", authUser, "review", "A visit with its review history", s.getVisit)
	add(http.MethodGet, p+"/visits/:id/audit", authSupervisor, "audit", "Audit trail of a visit", s.visitAudit)
	add(http.MethodPost, p+"/visits/:id/review", authSupervisor, "review", "Approve, send back for rework (reason) or reject (reason) a visit", s.reviewVisit)
	add(http.MethodPost, p+"/visits/review", authSupervisor, "review", "The same action on many visits: {ids, action, reason}", s.reviewBulk)
	add(http.MethodGet, p+"/conflicts", authSupervisor, "conflicts", "Conflicts in a place subtree (place, state=open|auto_resolved|resolved)", s.listConflicts)
	add(http.MethodPost, p+"/conflicts/:id/resolve", authSupervisor, "conflicts", "Resolve a conflict: {action: keep|take|value, value}", s.resolveConflict)
}

// placeScope returns the visible subtree of the place query parameter (or
// of everything the caller may see).
func (s *Server) placeScope(c echo.Context) (map[string]bool, error) {
	u := principal(c).User
	vis, err := s.visible(c, u)
	if err != nil {
		return nil, err
	}
	place := c.QueryParam("place")
	if place == "" {
		if vis == nil {
			return s.store.Subtree(c.Request().Context(), rootCodes(c, s))
		}
		return vis, nil
	}
	if vis != nil && !vis[place] {
		return nil, syncproto.Errorf(syncproto.CodeNotFound, "place %s not found", place)
	}
	return s.store.Subtree(c.Request().Context(), []string{place})
}

// rootCodes lists the top-level places (for admins, who see all).
func rootCodes(c echo.Context, s *Server) []string {
	ps, err := s.store.Places(c.Request().Context(), nil, false)
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range ps {
		if p.ParentCode == "" {
			out = append(out, p.Code)
		}
	}
	return out
}

// canSee checks that the caller may see something at place.
func (s *Server) canSee(c echo.Context, place string) error {
	vis, err := s.visible(c, principal(c).User)
	if err != nil {
		return err
	}
	if vis != nil && !vis[place] {
		return syncproto.Errorf(syncproto.CodeNotFound, "not found")
	}
	return nil
}

func (s *Server) listHouseholds(c echo.Context) error {
	places, err := s.placeScope(c)
	if err != nil {
		return err
	}
	limit, _ := strconv.Atoi(c.QueryParam("limit"))
	hs, err := s.store.Households(c.Request().Context(), places, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, hs)
}

func (s *Server) getHousehold(c echo.Context) error {
	ctx := c.Request().Context()
	rs := s.store
	h, deleted, err := rs.Household(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.canSee(c, h.PlaceCode); err != nil {
		return err
	}
	visits, err := rs.HouseholdVisits(ctx, h.ID)
	if err != nil {
		return err
	}
	conflicts, err := rs.Conflicts(ctx, h.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"household": h, "deleted": deleted, "visits": visits, "conflicts": conflicts})
}

func (s *Server) householdAudit(c echo.Context) error {
	h, _, err := s.store.Household(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.canSee(c, h.PlaceCode); err != nil {
		return err
	}
	ev, err := s.store.AuditTrail(c.Request().Context(), "household", h.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ev)
}

func (s *Server) listVisits(c echo.Context) error {
	places, err := s.placeScope(c)
	if err != nil {
		return err
	}
	limit, _ := strconv.Atoi(c.QueryParam("limit"))
	f := store.VisitFilter{Places: places, FormID: c.QueryParam("form"), State: c.QueryParam("state"), Flag: c.QueryParam("flag"),
		From: c.QueryParam("from"), To: c.QueryParam("to"), Limit: limit}
	vs, err := s.store.Visits(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, vs)
}

func (s *Server) getVisit(c echo.Context) error {
	ctx := c.Request().Context()
	v, err := s.store.Visit(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.canSee(c, v.PlaceCode); err != nil {
		return err
	}
	hist, err := s.store.ReviewHistory(ctx, v.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"visit": v, "reviews": hist})
}

func (s *Server) visitAudit(c echo.Context) error {
	v, err := s.store.Visit(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.canSee(c, v.PlaceCode); err != nil {
		return err
	}
	ev, err := s.store.AuditTrail(c.Request().Context(), "visit", v.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ev)
}

type reviewRequest struct {
	IDs    []string `json:"ids,omitempty"`
	Action string   `json:"action"`
	Reason string   `json:"reason"`
}

// Review applies one review action for the web console and the API.
func (s *Server) Review(ctx context.Context, u domain.User, visitID, action, reason string) (store.ReviewResult, error) {
	v, err := s.store.Visit(ctx, visitID)
	if err != nil {
		return store.ReviewResult{}, err
	}
	if u.Role != domain.RoleAdmin {
		vis, err := s.store.Subtree(ctx, u.PlaceCodes)
		if err != nil {
			return store.ReviewResult{}, err
		}
		if !vis[v.PlaceCode] {
			return store.ReviewResult{}, syncproto.Errorf(syncproto.CodeNotFound, "visit %s not found", visitID)
		}
	}
	return s.store.ReviewVisit(ctx, visitID, u, action, reason)
}

func (s *Server) reviewVisit(c echo.Context) error {
	var req reviewRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	res, err := s.Review(c.Request().Context(), principal(c).User, c.Param("id"), req.Action, req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}

func (s *Server) reviewBulk(c echo.Context) error {
	var req reviewRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if len(req.IDs) == 0 || len(req.IDs) > 500 {
		return syncproto.Errorf(syncproto.CodeValidation, "ids: 1..500 visit ids")
	}
	type item struct {
		ID     string              `json:"id"`
		Result *store.ReviewResult `json:"result,omitempty"`
		Error  *syncproto.Error    `json:"error,omitempty"`
	}
	out := make([]item, 0, len(req.IDs))
	for _, id := range req.IDs {
		res, err := s.Review(c.Request().Context(), principal(c).User, id, req.Action, req.Reason)
		if err != nil {
			code, _ := errorCode(err)
			out = append(out, item{ID: id, Error: &syncproto.Error{Code: code, Message: err.Error()}})
			continue
		}
		out = append(out, item{ID: id, Result: &res})
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listConflicts(c echo.Context) error {
	places, err := s.placeScope(c)
	if err != nil {
		return err
	}
	cs, err := s.store.ListConflicts(c.Request().Context(), places, c.QueryParam("state"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cs)
}

func (s *Server) resolveConflict(c echo.Context) error {
	var req struct {
		Action string          `json:"action"`
		Value  json.RawMessage `json:"value"`
	}
	if err := bind(c, &req); err != nil {
		return err
	}
	place, err := s.store.ConflictPlace(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	if err := s.canSee(c, place); err != nil {
		return err
	}
	res, err := s.store.ResolveConflict(c.Request().Context(), c.Param("id"), principal(c).User, req.Action, req.Value)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}
