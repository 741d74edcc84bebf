package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"fieldsync/server/app"
	"fieldsync/server/outboximport"
)

// runImportOutbox serves `fieldsync import-outbox [flags] FILE`: apply the
// unsent work a revoked or broken tablet exported (see
// server/outboximport). It works beside a running server (the database
// serialises the writes; blobs go through the same blob store).
func runImportOutbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := errors.New("usage: fieldsync import-outbox [-data DIR] [-db DB] [-by ADMIN] [-s3-... flags] FILE")
	fs := flag.NewFlagSet("fieldsync import-outbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	fs.StringVar(&cfg.DataDir, "data", "data", "data folder: SQLite file and local blob folder")
	dbFlag(fs, &cfg.DB)
	fs.StringVar(&cfg.S3.Endpoint, "s3-endpoint", "", "S3-compatible endpoint host:port; empty keeps blobs in the data folder")
	fs.StringVar(&cfg.S3.AccessKey, "s3-access-key", "", "S3 access key")
	fs.StringVar(&cfg.S3.SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&cfg.S3.Bucket, "s3-bucket", "fieldsync", "S3 bucket (created if missing)")
	fs.StringVar(&cfg.S3.Prefix, "s3-prefix", "", "key prefix inside the bucket")
	fs.StringVar(&cfg.S3.Region, "s3-region", "", "S3 region (default us-east-1)")
	fs.BoolVar(&cfg.S3.UseTLS, "s3-tls", false, "use HTTPS to reach the S3 endpoint")
	by := fs.String("by", "admin", "the administrator account doing the import (recorded in the audit log)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usage
	}
	st, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := app.OpenBlobs(ctx, cfg)
	if err != nil {
		return fmt.Errorf("blob store: %w", err)
	}
	sum, err := outboximport.ImportFile(ctx, outboximport.Config{Store: st, Blobs: blobs, By: *by}, fs.Arg(0))
	if sum != nil {
		sum.Print(stdout)
	}
	if err != nil {
		return err
	}
	if n := len(sum.Rejected) + len(sum.BlobsRejected); n > 0 {
		return fmt.Errorf("导入完成，但有 %d 项被拒绝（原因见上）", n)
	}
	return nil
}
