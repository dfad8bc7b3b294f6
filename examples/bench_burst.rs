//! `bench_burst URL N`: N concurrent identical GETs (with a token), released together; prints
//! how many answered 200.

use std::sync::Arc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, n) = (args[1].clone(), args[2].parse::<usize>().expect("a count"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, barrier) = (client.clone(), url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .get(&url)
                    .header("X-Auth-Token", "bench:p")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    println!("{ok}");
}
