package api

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fieldsync_http_requests_total",
		Help: "HTTP requests by method, route and status.",
	}, []string{"method", "route", "status"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fieldsync_http_request_duration_seconds",
		Help:    "HTTP request latency by method and route.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
	}, []string{"method", "route"})
)

func init() { prometheus.MustRegister(requests, latency) }

func metricsMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		if err != nil {
			if he, ok := err.(*echo.HTTPError); ok {
				status = he.Code
			} else {
				code, _ := errorCode(err)
				status = code.HTTPStatus()
			}
		}
		requests.WithLabelValues(c.Request().Method, route, strconv.Itoa(status)).Inc()
		latency.WithLabelValues(c.Request().Method, route).Observe(time.Since(start).Seconds())
		return err
	}
}
