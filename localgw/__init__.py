"""The local stand-in for API Gateway, Lambda and SQS event sources."""
