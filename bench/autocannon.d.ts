// autocannon ships no types; the part the serve benchmark uses.
declare module 'autocannon' {
  interface Result {
    requests: { average: number; total: number };
    latency: { p50: number; p99: number; average: number };
    errors: number;
    non2xx: number;
  }
  interface Options {
    url: string;
    connections?: number;
    duration?: number;
    pipelining?: number;
    requests?: {
      method?: string;
      path?: string;
      setupRequest?: (req: { path?: string }) => { path?: string };
    }[];
  }
  function autocannon(options: Options): Promise<Result>;
  export default autocannon;
}
