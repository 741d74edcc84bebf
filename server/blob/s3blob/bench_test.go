package s3blob_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"fieldsync/server/blob/blobtest"
	"fieldsync/server/blob/s3blob"
	"fieldsync/server/blob/s3blob/s3test"
)

// BenchmarkPut stores distinct blobs of photo size (250 KB) and of one
// multipart size (20 MiB) through 1 and 8 concurrent callers, against the
// test S3 server (.ci/test starts it):
//
//	bash .ci/test --only 'go test -run ^$ -bench Put -benchtime 100x ./server/blob/s3blob/'
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{250_000, 20 << 20} {
		for _, workers := range []int{1, 8} {
			if size > 1<<20 && workers > 1 {
				continue
			}
			b.Run(fmt.Sprintf("size=%d/workers=%d", size, workers), func(b *testing.B) {
				cfg := s3test.Config(b)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				s, err := s3blob.New(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				type item struct {
					data []byte
					sum  string
				}
				blobs := make([]item, b.N)
				for i := range blobs {
					data := blobtest.Data(uint64(i)+1e6*uint64(size%97), size)
					blobs[i] = item{data, blobtest.Sum(data)}
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				jobs := make(chan item)
				var wg sync.WaitGroup
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for it := range jobs {
							if err := s.Put(ctx, it.sum, int64(len(it.data)), blobtest.Stream(it.data)); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				for _, it := range blobs {
					jobs <- it
				}
				close(jobs)
				wg.Wait()
			})
		}
	}
}
