package serving

import (
	"encoding/json"

	"github.com/tilestream/tilestream/tiling"
)

// viewJSON is one view in GET /v1/views.
type viewJSON struct {
	Name          string        `json:"name"`
	Topic         string        `json:"topic"`
	Entity        string        `json:"entity"`
	Timestamp     string        `json:"timestamp"`
	Granularity   string        `json:"granularity"`
	LifetimeStart msTime        `json:"lifetime_start"`
	Features      []featureJSON `json:"features"`
}

type featureJSON struct {
	Name     string `json:"name"`
	Function string `json:"function"`
	Column   string `json:"column"`
	Window   string `json:"window"`
	// The function's options, when it has any.
	N           int       `json:"n,omitempty"`
	K           int       `json:"k,omitempty"`
	Precision   int       `json:"precision,omitempty"`
	Percentiles []float64 `json:"percentiles,omitempty"`
	Accuracy    float64   `json:"accuracy,omitempty"`
}

// viewList builds the body of GET /v1/views; views never change while a
// handler lives, so it is built once.
func viewList(views []*tiling.View) []byte {
	out := struct {
		Views []viewJSON `json:"views"`
	}{Views: make([]viewJSON, 0, len(views))}
	for _, v := range views {
		vj := viewJSON{
			Name:          v.Name,
			Topic:         v.Topic,
			Entity:        v.Entity,
			Timestamp:     v.Timestamp,
			Granularity:   tiling.FormatDuration(v.Granularity),
			LifetimeStart: msTime(v.LifetimeStart),
			Features:      make([]featureJSON, len(v.Features)),
		}
		for i, f := range v.Features {
			w := "lifetime"
			if f.Window != tiling.Lifetime {
				w = tiling.FormatDuration(f.Window)
			}
			vj.Features[i] = featureJSON{Name: f.Name, Function: string(f.Function), Column: f.Column, Window: w,
				N: f.N, K: f.K, Precision: f.Precision, Percentiles: f.Percentiles, Accuracy: f.Accuracy}
		}
		out.Views = append(out.Views, vj)
	}
	b, err := json.Marshal(out)
	if err != nil {
		panic("serving: encode view list: " + err.Error()) // strings and durations only
	}
	return append(b, '\n')
}
